"""One processor's consume -> handle -> produce loop with Kafka transactions.

Each batch of input records (up to ``max_batch`` or ``commit_interval_ms``) is handled and
its outputs, its dead letters and its input offsets are committed in one transaction, so a
crash at any point either publishes all of it or none of it (read_committed readers never
see a half batch or a retried batch twice). The pattern is confluent-kafka's
``examples/eos-transactions.py`` with KIP-447 fencing (``consumer_group_metadata``).

* A record whose bytes do not decode, or whose handler returns a non-retryable Failure,
  becomes a DeadLetter inside the same transaction: the DLQ write commits with the offset.
* A retryable Failure commits the records before it, rewinds to it, backs off and retries;
  after ``max_retries`` it is dead-lettered with ``retryable=true``.
* An abortable transaction error aborts and rewinds the whole batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.errors import TicketflowError
from pipeline.events import DeadLetter, to_record
from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Emit, Failure, Outcome
from pipeline.runtime.binding import Binding
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from topics.catalog import DLQ_MAX_BYTES, topic_name

log = logging.getLogger(__name__)

# Producer requests must fit a dead letter of the largest ingress record.
PRODUCER_MAX_BYTES = DLQ_MAX_BYTES + 1024 * 1024


class _Rewind(Exception):
    """Stop handling the batch at ``index``: commit what came before, retry from there."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


class TransactionalLoop:
    def __init__(self, binding: Binding, settings: Settings, serde: AvroSerde, instance_id: str,
                 metrics: RuntimeMetrics, stop: threading.Event) -> None:
        self.binding = binding
        self.settings = settings
        self.serde = serde
        self.metrics = metrics
        self.stop = stop
        prefix = settings.topic_prefix
        self.group = f"{prefix}ticketflow.{binding.name}"
        self.transactional_id = f"{self.group}.{instance_id}"
        self.topics = [topic_name(prefix, t) for t in binding.inputs]
        self.dlq_topic = topic_name(prefix, "tickets.dlq")
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._commits = 0
        #: monotonic time at which the batch in progress started; None between batches
        self.batch_started: float | None = None
        self.consumer: Any = None
        self.producer: Any = None

    # -- lifecycle -----------------------------------------------------------------------

    def _open(self) -> None:
        common = self.settings.kafka_common()
        self.consumer = Consumer({
            **common,
            "group.id": self.group,
            "client.id": self.transactional_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.settings.session_timeout_ms // 4),
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 50,
        })
        self.producer = Producer({
            **common,
            "transactional.id": self.transactional_id,
            "client.id": self.transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.max.bytes": PRODUCER_MAX_BYTES,
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
        })

    def run(self) -> None:
        self._open()
        try:
            # Fences a previous incarnation with this transactional.id and aborts its open
            # transaction, so a restarted worker never waits for the broker's timeout.
            self.producer.init_transactions(60)
            self.consumer.subscribe(self.topics)
            log.info("%s: consuming %s as %s", self.binding.name, self.topics, self.transactional_id)
            interval_s = self.settings.commit_interval_ms / 1000
            while not self.stop.is_set():
                messages = self.consumer.consume(num_messages=self.settings.max_batch, timeout=interval_s)
                records = [m for m in messages if self._usable(m)]
                if records:
                    self.batch_started = time.monotonic()
                    try:
                        self._process(records)
                    finally:
                        self.batch_started = None
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.fatal():
            raise KafkaException(error)
        log.warning("%s: consumer error: %s", self.binding.name, error)
        return False

    # -- one batch -----------------------------------------------------------------------

    def _process(self, records: Sequence[Message]) -> None:
        self.producer.begin_transaction()
        try:
            handled = self._handle_all(records)
        except _Rewind as rewind:
            if not self._commit(records[: rewind.index]):
                self._seek_to_first(records)  # the prefix was aborted too: redo the whole batch
                return
            self._seek_to_first(records[rewind.index:])
            self.metrics.retries.labels(self.binding.name, rewind.reason).inc()
            time.sleep(self._backoff_s(records[rewind.index]))
            return
        except Exception:
            self._abort_and_rewind(records, "handler_crash")
            raise
        self._commit(records[:handled])

    def _handle_all(self, records: Sequence[Message]) -> int:
        decoded = [self._decode(message) for message in records]
        ready = [d for d in decoded if not isinstance(d, Failure)]
        if self.binding.prepare is not None and ready:
            prepared = self._prepare(ready)
            if prepared is not None and prepared.retryable:
                self._retry_or_give_up(0, records[0], prepared)
        for index, (message, item) in enumerate(zip(records, decoded, strict=True)):
            started = time.perf_counter()
            outcome = item if isinstance(item, Failure) else self._handle_one(*item)
            if isinstance(outcome, Failure) and outcome.retryable:
                self._retry_or_give_up(index, message, outcome)
            if isinstance(outcome, Failure):
                self._dead_letter(message, outcome)
            else:
                self._emit(message, outcome)
            self._attempts.pop(_position(message), None)
            self.metrics.handle_seconds.labels(self.binding.name).observe(time.perf_counter() - started)
        return len(records)

    def _retry_or_give_up(self, index: int, message: Message, failure: Failure) -> None:
        """Raise _Rewind while attempts remain; return to dead-letter the record after that."""
        attempt = self._attempt(message)
        if attempt <= self.settings.max_retries:
            log.warning("%s: retryable %s at %s/%d/%d (attempt %d): %s", self.binding.name,
                        failure.error_class, message.topic(), message.partition(),
                        message.offset(), attempt, failure.message)
            raise _Rewind(index, "retryable_failure")

    def _decode(self, message: Message) -> Failure | tuple[Any, str]:
        value = message.value()
        if value is None:
            return Failure("DecodeError", "record has no value (tombstone)")
        try:
            record = self.serde.decode(self.binding.input_schema, value, allow_json=self.binding.allow_json)
            event = self.binding.from_record(record)
        except TicketflowError as exc:
            return Failure(type(exc).__name__, str(exc), retryable=exc.retryable)
        except (TypeError, ValueError) as exc:
            return Failure("DecodeError", f"record does not form a valid event: {exc}")
        topic, partition, offset = _position(message)
        return event, f"{topic}/{partition}/{offset}"

    def _handle_one(self, event: Any, origin: str) -> Outcome:
        try:
            return self.binding.handle(event, origin)
        except Exception as exc:
            return self._as_failure(exc, origin)

    def _prepare(self, ready: list[tuple[Any, str]]) -> Failure | None:
        assert self.binding.prepare is not None
        try:
            self.binding.prepare(ready)
        except Exception as exc:
            return self._as_failure(exc, "prepare")
        return None

    def _as_failure(self, exc: Exception, where: str) -> Failure:
        if isinstance(exc, TicketflowError):
            return Failure(type(exc).__name__, str(exc), retryable=exc.retryable)
        # A bug in a processor must not stop the stream: dead-letter the record, log the trace.
        log.error("%s: processor raised at %s", self.binding.name, where, exc_info=exc)
        return Failure(type(exc).__name__, f"processor error: {exc}")

    def _emit(self, message: Message, outcome: Emit) -> None:
        self.metrics.records.labels(self.binding.name, outcome.note or "emitted").inc()
        if outcome.note:
            log.info("%s: %s at %s/%d/%d: nothing emitted", self.binding.name, outcome.note,
                     message.topic(), message.partition(), message.offset())
        for output in outcome.outputs:
            topic = topic_name(self.settings.topic_prefix, output.topic)
            try:
                value = self.serde.encode(type(output.event).SCHEMA, to_record(output.event), topic)
            except TicketflowError as exc:
                self._dead_letter(message, Failure(type(exc).__name__, f"cannot encode output: {exc}"))
                return
            self._produce(topic, output.key.encode(), value)

    def _dead_letter(self, message: Message, failure: Failure) -> None:
        self.metrics.records.labels(self.binding.name, "dead_letter").inc()
        self.metrics.dead_letters.labels(self.binding.name, failure.error_class).inc()
        topic, partition, offset = _position(message)
        log.warning("%s: dead letter for %s/%d/%d: %s: %s", self.binding.name, topic, partition,
                    offset, failure.error_class, failure.message[:300])
        letter = DeadLetter(
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            processor=self.binding.name,
            error_class=failure.error_class,
            error_message=failure.message[:4000],
            retryable=failure.retryable,
            attempt=self._attempts.get(_position(message), 1),
            key=message.key(),
            value=message.value(),
            headers=_headers(message),
            failed_at=time.time_ns() // 1_000_000,
        )
        value = self.serde.encode(DeadLetter.SCHEMA, to_record(letter), self.dlq_topic)
        self._produce(self.dlq_topic, message.key(), value)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    # -- transactions --------------------------------------------------------------------

    def _commit(self, records: Sequence[Message]) -> bool:
        """Commit the open transaction with these records' offsets; False if it was aborted."""
        if not records:
            self.producer.abort_transaction()
            return True
        if not self._commit_offsets(records):
            self._abort_and_rewind(records, "transaction_aborted")
            return False
        return True

    def _commit_offsets(self, records: Sequence[Message]) -> bool:
        """Send the records' next offsets and commit the open transaction; False when the
        transaction had to be aborted (the caller aborts and rewinds)."""
        offsets: dict[tuple[str, int], int] = {}
        for message in records:
            topic, partition, offset = _position(message)
            offsets[(topic, partition)] = max(offsets.get((topic, partition), 0), offset + 1)
        started = time.perf_counter()
        log.debug("%s: committing %d records", self.binding.name, len(records))
        self._commits += 1
        if self._commits == self.settings.crash_before_commit:
            self._crash_mid_transaction()
        try:
            self.producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                self.consumer.consumer_group_metadata(),
                60,
            )
            self._commit_with_retry()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.txn_requires_abort():
                log.warning("%s: transaction aborted (%s); %d records to redo", self.binding.name, error,
                            len(records))
                return False
            raise
        self.metrics.transaction_seconds.labels(self.binding.name).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.binding.name).observe(len(records))
        return True

    def _crash_mid_transaction(self) -> None:
        """Fault injection (TICKETFLOW_CRASH_BEFORE_COMMIT): die with the outputs in the log
        but the transaction open, the worst moment for a crash."""
        self.producer.flush(30)
        log.critical("%s: injected crash before commit %d", self.binding.name, self._commits)
        os._exit(137)

    def _commit_with_retry(self) -> None:
        while True:
            try:
                self.producer.commit_transaction(60)
                return
            except KafkaException as exc:
                if exc.args[0].retriable():
                    log.warning("%s: commit not yet confirmed (%s); retrying", self.binding.name, exc.args[0])
                    continue
                raise

    def _abort_and_rewind(self, records: Sequence[Message], reason: str) -> None:
        self.producer.abort_transaction(60)
        self._seek_to_first(records)
        self.metrics.retries.labels(self.binding.name, reason).inc()

    def _seek_to_first(self, records: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for message in records:
            topic, partition, offset = _position(message)
            first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Revoked meanwhile: its new owner resumes from the committed offset.
                log.info("%s: not rewinding %s/%d: %s", self.binding.name, topic, partition, exc)

    def _attempt(self, message: Message) -> int:
        position = _position(message)
        self._attempts[position] = self._attempts.get(position, 0) + 1
        return self._attempts[position]

    def _backoff_s(self, message: Message) -> float:
        attempt = self._attempts.get(_position(message), 1)
        return float(min(10.0, self.settings.retry_backoff_ms / 1000 * 2 ** (attempt - 1)))


def _position(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (never None for a record without error)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _headers(message: Message) -> dict[str, bytes]:
    headers: list[tuple[str, bytes | str | None]] = list(message.headers() or [])  # type: ignore[arg-type]
    return {name: (value.encode() if isinstance(value, str) else value or b"") for name, value in headers}
