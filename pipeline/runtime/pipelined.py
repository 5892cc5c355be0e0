"""A transactional loop for slow, concurrent work (LLM steps): records start as they arrive
and commit as they finish, in offset order per partition.

:class:`~pipeline.runtime.loop.TransactionalLoop` handles a consumed batch and commits it
whole, so one slow record holds back the batch and everything behind it. Here each record
starts at once (``binding.start`` returns a future), up to ``max_in_flight``; every commit
interval the loop takes, per partition, the leading records whose work is done, publishes
their outputs (``binding.finish``) and commits their offsets in one transaction. An offset
is therefore never committed past an unfinished record, and a crash re-runs exactly the
records not yet committed (an LLM step then reuses its recorded result).

Backpressure: at ``max_in_flight`` the loop pauses its partitions and keeps polling (so it
stays in the group) until work finishes. On a rebalance, records of revoked partitions are
dropped from this loop (their new owner starts them again from the committed offset).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Emit, Failure, Outcome
from pipeline.runtime.binding import Binding
from pipeline.runtime.loop import TransactionalLoop, _position
from pipeline.serde import AvroSerde
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    message: Message
    event: Any
    origin: str
    future: Future[Any] | None  # None: decoding failed; ``failure`` says why
    failure: Failure | None = None

    @property
    def done(self) -> bool:
        return self.future is None or self.future.done()


class PipelinedLoop(TransactionalLoop):
    def __init__(self, binding: Binding, settings: Settings, serde: AvroSerde, instance_id: str,
                 metrics: RuntimeMetrics, stop: Any, max_in_flight: int) -> None:
        super().__init__(binding, settings, serde, instance_id, metrics, stop)
        if binding.start is None or binding.finish is None:
            raise ValueError(f"{binding.name}: a pipelined binding needs start and finish")
        self.max_in_flight = max_in_flight
        self.pending: dict[tuple[str, int], deque[_Entry]] = {}
        self._paused = False

    @property
    def in_flight(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def run(self) -> None:
        self._open()
        try:
            self.producer.init_transactions(60)
            self.consumer.subscribe(self.topics, on_revoke=self._revoked, on_lost=self._revoked)
            log.info("%s: consuming %s as %s (pipelined, up to %d in flight)", self.binding.name, self.topics,
                     self.transactional_id, self.max_in_flight)
            interval_s = self.settings.commit_interval_ms / 1000
            while not self.stop.is_set():
                room = self.max_in_flight - self.in_flight
                self._pause(room <= 0)
                messages = self.consumer.consume(num_messages=max(1, min(room, self.settings.max_batch)),
                                                 timeout=interval_s)
                for message in messages:
                    if self._usable(message):
                        self._start(message)
                self._commit_ready()
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def _pause(self, full: bool) -> None:
        if full == self._paused:
            return
        assignment = self.consumer.assignment()
        if full:
            self.consumer.pause(assignment)
        else:
            self.consumer.resume(assignment)
        self._paused = full

    def _start(self, message: Message) -> None:
        topic, partition, _ = _position(message)
        decoded = self._decode(message)
        queue = self.pending.setdefault((topic, partition), deque())
        if isinstance(decoded, Failure):
            queue.append(_Entry(message, None, "", None, decoded))
            return
        event, origin = decoded
        assert self.binding.start is not None
        try:
            future = self.binding.start(event, origin)
        except Exception as exc:
            queue.append(_Entry(message, event, origin, None, self._as_failure(exc, origin)))
            return
        queue.append(_Entry(message, event, origin, future))

    def _ready(self) -> list[_Entry]:
        ready: list[_Entry] = []
        for queue in self.pending.values():
            for entry in queue:
                if not entry.done:
                    break
                ready.append(entry)
        return ready

    def _outcome(self, entry: _Entry) -> Outcome:
        if entry.failure is not None:
            return entry.failure
        assert entry.future is not None and self.binding.finish is not None
        try:
            return self.binding.finish(entry.event, entry.future.result())
        except Exception as exc:
            return self._as_failure(exc, entry.origin)

    def _commit_ready(self) -> None:
        ready = self._ready()
        if not ready:
            return
        self.batch_started = time.monotonic()
        try:
            self.producer.begin_transaction()
            for entry in ready:
                started = time.perf_counter()
                outcome = self._outcome(entry)
                if isinstance(outcome, Emit):
                    self._emit(entry.message, outcome)
                else:
                    self._dead_letter(entry.message, outcome)
                self.metrics.handle_seconds.labels(self.binding.name).observe(time.perf_counter() - started)
            if not self._commit_offsets([e.message for e in ready]):
                self.producer.abort_transaction(60)
                self._restart_pending()
            else:
                for entry in ready:
                    topic, partition, _ = _position(entry.message)
                    queue = self.pending.get((topic, partition))
                    if queue and queue[0] is entry:
                        queue.popleft()
        finally:
            self.batch_started = None

    def _restart_pending(self) -> None:
        """After an abort: rewind every partition to its first uncommitted record and forget
        the in-flight work (it runs again; LLM steps reuse their recorded results)."""
        for (topic, partition), queue in self.pending.items():
            if queue:
                try:
                    self.consumer.seek(TopicPartition(topic, partition, _position(queue[0].message)[2]))
                except KafkaException as exc:
                    log.info("%s: not rewinding %s/%d: %s", self.binding.name, topic, partition, exc)
        self.pending.clear()
        self.metrics.retries.labels(self.binding.name, "transaction_aborted").inc()

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            dropped = self.pending.pop((tp.topic, tp.partition), None)
            for entry in dropped or ():
                if entry.future is not None:
                    entry.future.cancel()  # best effort; a call that completes anyway is recorded
            if dropped:
                log.info("%s: %s/%d revoked with %d records in flight; its new owner re-runs them",
                         self.binding.name, tp.topic, tp.partition, len(dropped))
        self._paused = False
