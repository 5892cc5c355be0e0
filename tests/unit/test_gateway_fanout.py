"""The gateway's fan-out consumer outlives a broker error: it is rebuilt and resumes where it read to."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.gateway import fanout as fanout_module
from pipeline.gateway.fanout import FanOut
from pipeline.settings import Settings


class _Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def value(self) -> bytes:
        return b"not avro"  # skipped as undecodable; only the position matters here

    def key(self) -> bytes | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


class _NoSerde:
    def decode(self, schema: Any, value: bytes) -> Any:
        raise ValueError("not avro")


class _FlakyConsumer:
    """A stand-in for confluent_kafka.Consumer: the first one fails as a broker with no leader yet
    does; the second serves one record; the third records where it was told to start."""

    made: list[_FlakyConsumer] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.n = len(self.made)
        self.made.append(self)
        self.assigned: list[TopicPartition] = []
        self.served = False
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None})})

    def offsets_for_times(self, wanted: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.n == 0:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return [TopicPartition(tp.topic, tp.partition, 5) for tp in wanted]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def poll(self, timeout: float) -> _Message | None:
        if self.n == 1 and not self.served:
            self.served = True
            return _Message("t.tickets.responses", 0, 41)
        if self.n == 1:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        threading.Event().wait(timeout)
        return None

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        return []

    def close(self) -> None:
        self.closed = True


def test_a_broker_error_rebuilds_the_consumer_which_resumes_where_it_had_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _FlakyConsumer.made = []
    monkeypatch.setattr(fanout_module, "Consumer", _FlakyConsumer)
    loop = asyncio.new_event_loop()
    fan = FanOut(Settings(topic_prefix="t."), _NoSerde(), loop, lambda resolved: None)  # type: ignore[arg-type]
    fan.start()
    try:
        assert fan.ready.wait(20), "the fan-out never became ready after the broker error"
        deadline = threading.Event()
        for _ in range(100):
            if len(_FlakyConsumer.made) >= 3 and _FlakyConsumer.made[2].assigned:
                break
            deadline.wait(0.1)
        first, second, third = _FlakyConsumer.made[:3]
        assert first.closed and second.closed
        assert {(tp.topic, tp.offset) for tp in second.assigned} == {(t, 5) for t in fan.topics}
        resumed = {tp.topic: tp.offset for tp in third.assigned}
        assert resumed["t.tickets.responses"] == 42  # after the record it read, not 15 minutes back
        assert all(offset == 5 for topic, offset in resumed.items() if topic != "t.tickets.responses")
        assert fan.ready.is_set()
    finally:
        fan.close()
        loop.close()
