"""The gateway's Kafka producer for asyncio: librdkafka's own producer, a thread that serves its
delivery reports, and an asyncio future per record.

``produce`` is a non-blocking call into librdkafka (it only enqueues), so it runs on the event
loop itself; the delivery report resolves the record's future from the poll thread through
``call_soon_threadsafe``. confluent-kafka's experimental ``AIOProducer`` was tried first: it
hands every produce (and every poll) to a thread pool, and under load here (200 requests/s
beside a worker on two cores) its queue grew until 2,748 of 4,000 tickets missed the
10-second produce timeout (bench/gateway_bench.py).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer


class AsyncProducer:
    def __init__(self, conf: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.producer = Producer(conf)
        self.loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gateway-delivery", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def produce(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        """Enqueue a record; the future resolves when the broker has it (``acks=all``)."""
        future: asyncio.Future[Any] = self.loop.create_future()

        def delivered(err: KafkaError | None, message: Any) -> None:
            self.loop.call_soon_threadsafe(_settle, future, err, message)

        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=delivered)
                return future
            except BufferError:  # the local queue is full: let the poll thread drain it
                self.producer.poll(0.01)

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            self.producer.list_topics(timeout=timeout_s)
            return True
        except KafkaException:
            return False

    def close(self, timeout_s: float = 10.0) -> None:
        self.producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=5)


def _settle(future: asyncio.Future[Any], err: KafkaError | None, message: Any) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(KafkaException(err))
    else:
        future.set_result(message)
