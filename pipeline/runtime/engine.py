"""The engine: one processor's consume -> transform -> produce loop, exactly once.

One engine for both ways a processor finishes records (pipeline/runtime/binding.py):

1. **Take** what the consumer returns: decode each record (a record that does not decode
   is a failure, dead-lettered with its bytes); an in-order processor handles the batch at
   once (``handle_batch``), a concurrent one starts each record (``start``), up to
   ``max_in_flight`` records taken and not yet committed (then the partitions are paused
   and the consumer keeps polling, so the worker stays in its group).
2. **Settle**, per partition in offset order, the leading records whose work is done;
   ask the failure policy (pipeline/runtime/failures.py) about a failed one.
3. **Commit** the settled records' outputs, dead letters and offsets in one transaction
   (pipeline/runtime/transactions.py). An offset is never committed past an unfinished
   record, and one slow record holds back nothing but the commits behind it.
4. **Rewind** a partition at a record to retry (the records after it are handled again, an
   LLM step reusing its recorded reply), then **stall**: every partition paused until the
   dependency answers its probe, or the retry's backoff is over. An aborted transaction
   rewinds every partition; a revoked partition's records are dropped (its new owner
   starts them again from the committed offset).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline.errors import TicketflowError
from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Emit, Failure, Outcome
from pipeline.runtime.binding import Binding
from pipeline.runtime.failures import DependencyHealth, FailurePolicy, Stall, Verdict, as_failure
from pipeline.runtime.transactions import Transactions, position
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from topics.catalog import topic_name

log = logging.getLogger(__name__)

#: At most this many records of a partition committed ahead of a running one (the offsets go
#: in the commit's metadata, which the broker caps at 4,096 bytes by default).
MAX_AHEAD = 400
_AHEAD_TAG = "ahead1:"


def encode_ahead(committed: int, offsets: set[int]) -> str:
    """The answered offsets past ``committed``, as the commit's metadata ("ahead1:" and the
    distances from the committed offset)."""
    return _AHEAD_TAG + ",".join(str(o - committed) for o in sorted(offsets)) if offsets else ""


def decode_ahead(committed: int, metadata: str | None) -> set[int]:
    if not metadata or not metadata.startswith(_AHEAD_TAG) or committed < 0:
        return set()
    body = metadata[len(_AHEAD_TAG):]
    return {committed + int(d) for d in body.split(",") if d}


@dataclass
class _Entry:
    """One record taken: its outcome once known (``future`` None), or its work in flight."""
    message: Message
    event: Any = None
    origin: str = ""
    future: Future[Any] | None = None
    outcome: Outcome | None = None  # None with no future: not handled (consumed again)
    emitted: bool = False  # its outputs are committed, ahead of a record still running before it

    @property
    def done(self) -> bool:
        return self.future is None or self.future.done()


def closing(exc: KafkaException) -> bool:
    """The consumer's handle is being destroyed (``close()`` runs): not a broker fault."""
    return bool(exc.args) and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError._DESTROY


class Engine:
    def __init__(self, binding: Binding, settings: Settings, serde: AvroSerde, instance_id: str,
                 metrics: RuntimeMetrics, stop: threading.Event, health: DependencyHealth | None = None) -> None:
        self.binding = binding
        self.settings = settings
        self.serde = serde
        self.instance_id = instance_id
        self.metrics = metrics
        self.stop = stop
        self.policy = FailurePolicy(health or DependencyHealth({}, metrics), settings.max_retries,
                                    settings.retry_backoff_ms / 1000, settings.dependency_probe_max_s)
        metrics.start(binding.name, self.policy.health.probes)
        self.topics = [topic_name(settings.topic_prefix, t) for t in binding.inputs]
        self.max_in_flight = binding.max_in_flight if binding.concurrent else settings.max_batch
        self.pending: dict[tuple[str, int], deque[_Entry]] = {}
        #: concurrent bindings: offsets past a partition's committed offset whose outputs are
        #: committed already (the commit's metadata says which); consumed again, they are skipped
        self.ahead: dict[tuple[str, int], set[int]] = {}
        self.stall: Stall | None = None
        self._paused = False
        self._attempts: dict[tuple[str, int, int], int] = {}
        #: monotonic time at which the handling or commit in progress started (the worker's
        #: watchdog restarts a process stuck in the Kafka client); None in between
        self.batch_started: float | None = None
        self.kafka: Transactions | None = None

    @property
    def interval_ms(self) -> int:
        """How long a consume waits for records to fill a batch (and so the commit interval)."""
        if self.binding.background:
            return self.settings.background_commit_interval_ms
        return self.settings.commit_interval_ms

    @property
    def in_flight(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def run(self) -> None:
        kafka = self.kafka = Transactions(self.binding.name, self.settings, self.serde, self.instance_id,
                                          self.metrics,
                                          fetch_wait_ms=self.interval_ms if self.binding.background else 50,
                                          progress=self._waiting_for_broker)
        try:
            kafka.start(self.topics, self._assigned, self._revoked)
            log.info("%s: consuming %s as %s (%s, up to %d in flight)", self.binding.name, self.topics,
                     kafka.transactional_id, "concurrent" if self.binding.concurrent else "in order",
                     self.max_in_flight)
            interval_s = self.interval_ms / 1000
            while not self.stop.is_set():
                if self.stall is not None and self.stall.over():
                    self.stall = None
                room = self.max_in_flight - self.in_flight
                self._pause(room <= 0 or self.stall is not None)
                messages = kafka.consumer.consume(num_messages=max(1, min(room, self.settings.max_batch)),
                                                  timeout=interval_s)
                records = [m for m in messages if kafka.usable(m)]
                if records:
                    self._take(records)
                self._commit_ready()
        finally:
            kafka.close()

    def _waiting_for_broker(self) -> None:
        """A blocking Kafka call of the commit returned (done, or to be retried while the
        broker is away): the thread is not stuck in the client, the watchdog's clock starts
        again. What it catches is one call that never returns."""
        if self.batch_started is not None:
            self.batch_started = time.monotonic()

    # -- 1. take -------------------------------------------------------------------------

    def _take(self, records: Sequence[Message]) -> None:
        entries = [self._decoded(message) for message in records]
        if self.binding.concurrent:
            for entry in entries:
                topic, partition, offset = position(entry.message)
                if offset in self.ahead.get((topic, partition), ()):
                    entry.emitted = True  # answered before a restart or a rewind: not again
                elif entry.outcome is None:
                    self._start(entry)
        else:
            self._handle(entries)
        for entry in entries:
            topic, partition, _ = position(entry.message)
            self.pending.setdefault((topic, partition), deque()).append(entry)

    def _decoded(self, message: Message) -> _Entry:
        value = message.value()
        if value is None:
            return _Entry(message, outcome=Failure("DecodeError", "record has no value (tombstone)"))
        try:
            record = self.serde.decode(self.binding.input_schema, value, allow_json=self.binding.allow_json)
            event = self.binding.from_record(record)
        except TicketflowError as exc:
            return _Entry(message, outcome=Failure(type(exc).__name__, str(exc), retryable=exc.retryable))
        except (TypeError, ValueError) as exc:
            return _Entry(message, outcome=Failure("DecodeError", f"record does not form a valid event: {exc}"))
        topic, partition, offset = position(message)
        return _Entry(message, event, f"{topic}/{partition}/{offset}")

    def _start(self, entry: _Entry) -> None:
        assert self.binding.start is not None
        try:
            entry.future = self.binding.start(entry.event, entry.origin)
        except Exception as exc:
            entry.outcome = as_failure(self.binding.name, exc, entry.origin)

    def _handle(self, entries: list[_Entry]) -> None:
        """``handle_batch`` over the decoded records; when it raises, each record alone."""
        ready = [e for e in entries if e.outcome is None]
        if not ready:
            return
        started = time.perf_counter()
        self.batch_started = time.monotonic()
        try:
            try:
                self._apply(ready)
            except Exception as exc:
                failure = as_failure(self.binding.name, exc, "handle_batch")
                if failure.retryable:
                    ready[0].outcome = failure  # the rest are not handled: consumed again
                    return
                for entry in ready:
                    try:
                        self._apply([entry])
                    except Exception as one:
                        entry.outcome = as_failure(self.binding.name, one, entry.origin)
        finally:
            self.batch_started = None
            per_record = (time.perf_counter() - started) / len(ready)
            for _ in ready:
                self.metrics.handle_seconds.labels(self.binding.name).observe(per_record)

    def _apply(self, entries: list[_Entry]) -> None:
        assert self.binding.handle_batch is not None
        outcomes = self.binding.handle_batch([(e.event, e.origin) for e in entries])
        stopped = bool(outcomes) and isinstance(outcomes[-1], Failure) and outcomes[-1].retryable
        if len(outcomes) > len(entries) or (len(outcomes) < len(entries) and not stopped):
            raise ValueError(f"{self.binding.name}: {len(outcomes)} outcomes for {len(entries)} records "
                             "(fewer only after a retryable failure)")
        for entry, outcome in zip(entries, outcomes, strict=False):
            entry.outcome = outcome

    def _outcome(self, entry: _Entry) -> Outcome | None:
        if entry.future is None:  # None: not handled
            return entry.outcome
        assert self.binding.finish is not None
        try:
            return self.binding.finish(entry.event, entry.future.result())
        except Exception as exc:
            return as_failure(self.binding.name, exc, entry.origin)

    # -- 2. settle -----------------------------------------------------------------------

    def _settled(self) -> tuple[list[tuple[_Entry, Outcome]], list[tuple[_Entry, Verdict | None]]]:
        """Per partition, the leading finished records with their outcomes, up to the first one
        to consume again (apart: with the policy's verdict, or None when it was not handled).
        A concurrent binding's finished records behind one still running are ready too (up to
        ``MAX_AHEAD``): their outputs need not wait for a slow step before them."""
        ready: list[tuple[_Entry, Outcome]] = []
        again: list[tuple[_Entry, Verdict | None]] = []
        ordered = not self.binding.concurrent
        for key, queue in self.pending.items():
            room = MAX_AHEAD - len(self.ahead.get(key, ()))
            running = False
            for entry in queue:
                if entry.emitted:
                    continue
                if not entry.done:
                    if ordered:
                        break
                    running = True  # a concurrent binding commits the finished records behind it
                    continue
                if running:
                    if room <= 0:
                        break
                    room -= 1
                outcome = self._outcome(entry)
                entry.outcome, entry.future = outcome, None  # finished once, whenever it is committed
                if outcome is None:
                    if not running:
                        again.append((entry, None))
                    break
                if isinstance(outcome, Failure) and outcome.retryable:
                    if running:
                        break  # judged (and consumed again) once it leads its partition
                    verdict = self._judge(entry.message, outcome)
                    if not verdict.dead_letter:
                        again.append((entry, verdict))
                        break
                ready.append((entry, outcome))
        return ready, again

    def _judge(self, message: Message, failure: Failure) -> Verdict:
        """The failure policy's verdict; an attempt counts only while the dependency answers."""
        where = position(message)
        attempts = self._attempts.get(where, 0) + 1
        verdict = self.policy.judge(failure, attempts)
        if verdict.wait_for is None:
            self._attempts[where] = attempts
            if not verdict.dead_letter:
                log.warning("%s: retryable %s at %s/%d/%d (attempt %d): %s", self.binding.name,
                            failure.error_class, *where, attempts, failure.message[:300])
        return verdict

    # -- 3. commit -----------------------------------------------------------------------

    def _commit_ready(self) -> None:
        ready, again = self._settled()
        if ready:
            self._commit(ready)
        for entry, verdict in again:
            self._rewind(entry)
            if verdict is None:
                continue
            self.metrics.retries.labels(self.binding.name,
                                        "dependency_down" if verdict.wait_for else "retryable_failure").inc()
            if self.stall is None or (verdict.wait_for and self.stall.dependency is None):
                self.stall = Stall(self.binding.name, self.policy, verdict, self.metrics)

    def _commit(self, ready: list[tuple[_Entry, Outcome]]) -> None:
        kafka = self.kafka
        assert kafka is not None
        self.batch_started = time.monotonic()
        try:
            kafka.begin()
            for entry, outcome in ready:
                where = position(entry.message)
                if isinstance(outcome, Emit):
                    kafka.emit(entry.message, outcome, self._attempts.get(where, 1))
                else:
                    kafka.dead_letter(entry.message, outcome, self._attempts.get(where, 1))
                self._attempts.pop(where, None)
            if self.binding.concurrent:
                positions = self._positions(ready)
                if not kafka.commit([e.message for e, _ in ready], positions):
                    self._restart_pending()
                    return
                self._advance(ready, positions)
                return
            if not kafka.commit([e.message for e, _ in ready]):
                self._restart_pending()
                return
            for entry, _ in ready:
                topic, partition, _ = position(entry.message)
                queue = self.pending.get((topic, partition))
                if queue and queue[0] is entry:
                    queue.popleft()
        finally:
            self.batch_started = None

    def _positions(self, ready: list[tuple[_Entry, Outcome]]) -> dict[tuple[str, int], tuple[int, str]]:
        """Per partition with records to commit: the offset to commit (the first record not yet
        answered) and the offsets past it that are answered (the commit's metadata)."""
        now_done: dict[tuple[str, int], set[int]] = {}
        for entry, _ in ready:
            topic, partition, offset = position(entry.message)
            now_done.setdefault((topic, partition), set()).add(offset)
        positions = {}
        for key, offsets in now_done.items():
            answered = offsets | self.ahead.get(key, set())
            queue = self.pending.get(key, deque())
            last = max(answered) + 1
            first_open = next((position(e.message)[2] for e in queue
                               if not e.emitted and position(e.message)[2] not in answered), None)
            if first_open is None:
                first_open = max(last, position(queue[-1].message)[2] + 1) if queue else last
            positions[key] = (first_open, encode_ahead(first_open, {o for o in answered if o > first_open}))
        return positions

    def _advance(self, ready: list[tuple[_Entry, Outcome]], positions: dict[tuple[str, int], tuple[int, str]]) -> None:
        """After a commit: the committed records are answered; the partition's queue starts at
        its first open record, and what lies ahead of it is remembered."""
        for entry, _ in ready:
            entry.emitted = True
        for key, (committed, _) in positions.items():
            queue = self.pending.get(key)
            ahead = self.ahead.setdefault(key, set())
            ahead.update(position(e.message)[2] for e, _ in ready if position(e.message)[:2] == key)
            while queue and position(queue[0].message)[2] < committed:
                queue.popleft()
            self.ahead[key] = {o for o in ahead if o >= committed}

    # -- 4. rewind and stall -------------------------------------------------------------

    def _rewind(self, entry: _Entry) -> None:
        """Consume the partition again from ``entry``; forget it and the records after it (work
        still in flight finishes on its own)."""
        assert self.kafka is not None
        topic, partition, offset = position(entry.message)
        self.pending.pop((topic, partition), None)
        self.kafka.seek(topic, partition, offset)

    def _restart_pending(self) -> None:
        """After an aborted transaction: every partition from its first uncommitted record."""
        assert self.kafka is not None
        for (topic, partition), queue in self.pending.items():
            if queue:
                self.kafka.seek(topic, partition, position(queue[0].message)[2])
        self.pending.clear()

    def _pause(self, hold: bool) -> None:
        """Paused while full or stalled; partitions assigned meanwhile are paused as they come."""
        if hold == self._paused:
            return
        assert self.kafka is not None
        consumer = self.kafka.consumer
        (consumer.pause if hold else consumer.resume)(consumer.assignment())
        self._paused = hold

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        if self.binding.concurrent:
            committed = self._committed(consumer, partitions)
            if committed is None:
                return
            for tp in committed:
                self.ahead[(tp.topic, tp.partition)] = decode_ahead(tp.offset, tp.metadata)
        if self._paused:
            try:
                consumer.pause(partitions)
            except KafkaException as exc:
                if not closing(exc):
                    raise
                log.info("%s: assignment during close not paused", self.binding.name)

    def _committed(self, consumer: Any, partitions: list[TopicPartition]) -> list[TopicPartition] | None:
        """The committed offsets and their metadata (None: the consumer is closing). Without
        them the records answered ahead would be answered again, so a broker that does not say
        is waited for, then fatal."""
        for attempt in range(1, 6):
            try:
                return list(consumer.committed(partitions, timeout=30))
            except KafkaException as exc:
                if closing(exc):
                    # an assignment delivered while the consumer closes (a graceful stop during a
                    # rebalance): it owns nothing any more, so nothing was answered ahead here
                    log.info("%s: assignment during close ignored", self.binding.name)
                    return None
                if attempt == 5:
                    raise
                log.warning("%s: reading the committed offsets failed (%s); retrying", self.binding.name, exc)
                time.sleep(attempt)
        raise AssertionError("unreachable")

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.ahead.pop((tp.topic, tp.partition), None)
            dropped = self.pending.pop((tp.topic, tp.partition), None)
            for entry in dropped or ():
                if entry.future is not None:
                    entry.future.cancel()  # best effort; a call that completes anyway is recorded
            if dropped:
                log.info("%s: %s/%d revoked with %d records in flight; its new owner re-runs them",
                         self.binding.name, tp.topic, tp.partition, len(dropped))
        self._paused = False
