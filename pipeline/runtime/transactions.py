"""The Kafka side of the engine: one processor's consumer and transactional producer.

Outputs, dead letters and input offsets of a set of records are committed in one
transaction, so a crash at any point publishes all of it or none of it (read_committed
readers never see half a set, or a retried set twice). The pattern is confluent-kafka's
``examples/eos-transactions.py`` with KIP-447 fencing (``consumer_group_metadata``).
Nothing here decides what to do with a record: that is the engine's and its failure
policy's (pipeline/runtime/engine.py, pipeline/runtime/failures.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.errors import TicketflowError
from pipeline.events import DeadLetter, to_record
from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Emit, Failure, Output
from pipeline.runtime.guarded import CallHung, GuardedCalls
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from topics.catalog import DLQ_MAX_BYTES, spec, topic_name

log = logging.getLogger(__name__)

# Producer requests must fit a dead letter of the largest ingress record.
PRODUCER_MAX_BYTES = DLQ_MAX_BYTES + 1024 * 1024
#: how long past its own timeout a guarded call may take before it is given up (guarded.py)
OVERRUN_S = 2.0

Position = tuple[str, int, int]

#: the producer's epoch is over: the transaction coordinator ended its transaction
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


def fenced(error: KafkaError) -> bool:
    """The producer was fenced. Nothing else can hold this processor's transactional id: it
    carries the worker's slot, which one process at a time locks (worker.acquire_slot), and a
    new producer of our own replaces the one it fences. So it is the coordinator's doing: a
    transaction left open across a broker outage outlived the transaction timeout, the
    restarted broker aborted it and bumped the epoch (seen in CI: the next commit failed with
    "_FENCED: This instance has been fenced by a newer instance", fatal, and the worker
    exited). Its records are redone on a new producer, as after any aborted transaction."""
    return error.code() in FENCED


def position(message: Message) -> Position:
    """(topic, partition, offset) of a consumed record (never None for a record without error)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def egress_topic(output: Output) -> str:
    """Where an output goes: a replayed or audit ticket's answer never reaches the customers'
    ``tickets.responses``; it goes to ``tickets.replay.responses`` (ARCHITECTURE: replays)."""
    if output.topic == "tickets.responses" and getattr(output.event, "replay_tag", None):
        return "tickets.replay.responses"
    return output.topic


class Transactions:
    def __init__(self, name: str, settings: Settings, serde: AvroSerde, instance_id: str,
                 metrics: RuntimeMetrics, fetch_wait_ms: int = 50,
                 progress: Callable[[], None] | None = None) -> None:
        self.name = name
        #: called whenever a blocking call of a commit returns, done or to be retried: the
        #: worker's watchdog restarts a thread stuck in one call, not a commit whose calls each
        #: took their time (a flush and an offsets send of up to the transaction timeout each,
        #: across a broker restart on a loaded machine) or one that keeps retrying (an outage)
        self.progress = progress or (lambda: None)
        self.settings = settings
        self.serde = serde
        self.metrics = metrics
        prefix = settings.topic_prefix
        self.group = f"{prefix}ticketflow.{name}"
        self.transactional_id = f"{self.group}.{instance_id}"
        self.dlq_topic = topic_name(prefix, "tickets.dlq")
        self._commits = 0
        #: producers made so far; a callback of an earlier one (closing in the background) is ignored
        self._generation = 0
        common = settings.kafka_common()
        self.consumer: Any = Consumer({
            **common,
            "group.id": self.group,
            "client.id": self.transactional_id,
            "error_cb": lambda error: self._on_error(error, self._generation),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 4),
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": fetch_wait_ms,
        })
        self.producer: Any = self._new_producer()
        #: send_offsets_to_transaction runs here when guarded (TICKETFLOW_GUARD_SEND_OFFSETS)
        self._offsets_calls: GuardedCalls | None = (GuardedCalls(f"offsets-{name}")
                                                    if settings.guard_send_offsets else None)
        #: producers left behind with a thread stuck inside them (never closed under it)
        self.abandoned = 0
        #: the broker was unreachable since the producer was made (all connections down, or the
        #: group session lost): the next transaction starts on a new producer (see ``begin``)
        self.broker_lost = False
        #: KIP-447's group metadata changes only with the group's generation: asked for once
        #: per assignment (the call waits on librdkafka's thread while holding the GIL)
        self._group_metadata: Any = None
        #: a transaction is begun on the current producer (the next one is begun as soon as
        #: the last one commits: see ``_begin_ahead``)
        self._open = False

    def _new_producer(self) -> Any:
        self._generation += 1
        generation = self._generation
        return Producer({
            **self.settings.kafka_common(),
            "transactional.id": self.transactional_id,
            "client.id": self.transactional_id,
            "error_cb": lambda error: self._on_error(error, generation),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.max.bytes": PRODUCER_MAX_BYTES,
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            # A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until the
            # broker has written the last one's markers; librdkafka waits retry.backoff.ms
            # (100 ms by default) before asking again. Java's producer special-cases 20 ms.
            "retry.backoff.ms": 20,
        })

    def _on_error(self, error: KafkaError, generation: int) -> None:
        """librdkafka's client-level errors (served by the consumer's consume and the producer's
        poll and flush, on this engine's thread)."""
        if generation != self._generation:
            return  # a producer given up, closing
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.broker_lost = True
            log.warning("%s: kafka: %s", self.name, error)
        else:  # a connection's failure, retried by librdkafka (which logs it too)
            log.debug("%s: kafka: %s", self.name, error)

    def _renew_producer(self, close_old: bool = True) -> None:
        """A new transactional producer after the broker was lost, the open transaction (if
        any) left to the broker to abort.

        librdkafka (2.16) keeps the group coordinator's connection of before an outage in its
        coordinator cache; when that connection was decommissioned (the broker left the
        metadata while it restarted), ``send_offsets_to_transaction`` and the abort wait for it
        past their timeouts, for good (confluentinc/librdkafka#5511, #5456). Measured here: the
        first commit after a broker restart hung until the watchdog restarted the process. A
        new producer looks the coordinator up afresh, and its ``init_transactions`` fences the
        old one's epoch and aborts its open transaction on the broker. The old one is closed
        on a thread of its own, since its close may wait on the same lost connection."""
        log.info("%s: the broker was unreachable; the next transaction starts on a new producer", self.name)
        self.progress()  # the call that failed returned: waiting, not stuck
        old = self.producer
        self.producer = self._new_producer()
        self.broker_lost = False
        self._open = False
        if close_old:
            threading.Thread(target=old.close, name=f"close-{self.name}", daemon=True).start()
        while True:
            try:
                self.producer.init_transactions(self.settings.transaction_timeout_ms / 1000)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                log.warning("%s: the new producer cannot start its transactions yet (%s); retrying",
                            self.name, exc.args[0])
                self.progress()

    def start(self, topics: list[str], on_assign: Callable[..., None], on_revoke: Callable[..., None]) -> None:
        # Fences a previous incarnation with this transactional.id and aborts its open
        # transaction, so a restarted worker never waits for the broker's timeout.
        self.producer.init_transactions(60)
        def assigned(consumer: Any, partitions: list[TopicPartition]) -> None:
            self._group_metadata = None
            on_assign(consumer, partitions)

        def revoked(consumer: Any, partitions: list[TopicPartition]) -> None:
            self._group_metadata = None
            on_revoke(consumer, partitions)

        def lost(consumer: Any, partitions: list[TopicPartition]) -> None:
            self.broker_lost = True  # the group session timed out: the coordinator was unreachable
            revoked(consumer, partitions)

        self.consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def close(self) -> None:
        self.consumer.close()
        try:
            self.producer.flush(10)
        except KafkaException as exc:  # a fenced producer: its transaction is aborted already
            log.warning("%s: closing: %s", self.name, exc.args[0])
        if self._offsets_calls is not None:
            self._offsets_calls.close()

    def usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.fatal():
            raise KafkaException(error)
        log.warning("%s: consumer error: %s", self.name, error)
        return False

    # -- outputs -------------------------------------------------------------------------

    def emit(self, message: Message, outcome: Emit, attempt: int) -> None:
        self.metrics.records.labels(self.name, outcome.note or "emitted").inc()
        if outcome.note:
            log.info("%s: %s at %s/%d/%d: nothing emitted", self.name, outcome.note, *position(message))
        for output in outcome.outputs:
            name = egress_topic(output)
            topic = topic_name(self.settings.topic_prefix, name)
            try:
                if spec(name).value_format == "json":
                    value = self.serde.to_json(to_record(output.event))
                else:
                    value = self.serde.encode(type(output.event).SCHEMA, to_record(output.event), topic)
            except TicketflowError as exc:
                self.dead_letter(message, Failure(type(exc).__name__, f"cannot encode output: {exc}"), attempt)
                return
            self._produce(topic, output.key.encode(), value)

    def dead_letter(self, message: Message, failure: Failure, attempt: int) -> None:
        """The record's original bytes, key and headers on ``tickets.dlq``, with the reason."""
        self.metrics.records.labels(self.name, "dead_letter").inc()
        self.metrics.dead_letters.labels(self.name, failure.error_class).inc()
        topic, partition, offset = position(message)
        log.warning("%s: dead letter for %s/%d/%d: %s: %s", self.name, topic, partition, offset,
                    failure.error_class, failure.message[:300])
        letter = DeadLetter(
            source_topic=topic, source_partition=partition, source_offset=offset, processor=self.name,
            error_class=failure.error_class, error_message=failure.message[:4000], retryable=failure.retryable,
            attempt=attempt, key=message.key(), value=message.value(), headers=_headers(message),
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
            except KafkaException as exc:
                if not fenced(exc.args[0]):
                    raise
                self.broker_lost = True  # the commit gives this transaction up and redoes it
                return

    # -- transactions --------------------------------------------------------------------

    def begin(self) -> None:
        if self.broker_lost:
            self._renew_producer()
        if not self._open:
            try:
                self.producer.begin_transaction()
            except KafkaException as exc:
                if not fenced(exc.args[0]):
                    raise
                log.warning("%s: %s; the next transaction starts on a new producer", self.name, exc.args[0])
                self._renew_producer()
                self.producer.begin_transaction()
            self._open = True

    def _begin_ahead(self) -> None:
        """Begin the next transaction right after a commit.

        ``begin_transaction`` waits for librdkafka's main thread without releasing the GIL
        (confluent-kafka's ``Producer_begin_transaction`` has no ``CallState``), so every
        thread of the worker stops meanwhile: 9.9 % of the samples that held the GIL at 100
        tickets/s. Right after a commit that thread is awake (it has just handled the EndTxn
        response), so the call returns at once, where a begin at the next commit (25 ms
        later) waits for it to be woken and scheduled (``bench/txn_begin_probe.py``). A begun
        transaction is local state until its first output or offset: the broker sees nothing
        and no timeout runs. A failure here is left to ``begin`` (same call, same error)."""
        try:
            self.producer.begin_transaction()
            self._open = True
        except KafkaException as exc:
            log.debug("%s: beginning the next transaction ahead failed (%s); begun at the next commit",
                      self.name, exc)

    def commit(self, records: Sequence[Message],
               positions: dict[tuple[str, int], tuple[int, str]] | None = None) -> bool:
        """Send the records' next offsets (or ``positions``: an offset and its metadata per
        partition) and commit the open transaction; False when it had to be aborted (it is
        then aborted here; the caller rewinds)."""
        offsets: dict[tuple[str, int], tuple[int, str]] = dict(positions or {})
        if positions is None:
            for message in records:
                topic, partition, offset = position(message)
                offsets[(topic, partition)] = (max(offsets.get((topic, partition), (0, ""))[0], offset + 1), "")
        started = time.perf_counter()
        self._commits += 1
        if self._commits == self.settings.crash_before_commit:
            self._crash_mid_transaction()
        try:
            # Outputs first: their AddPartitionsToTxn is retried at once when the previous
            # transaction's markers are still being written, where AddOffsetsToTxn, sent first,
            # waited retry.backoff.ms (measured: 63 ms a transaction back to back, 4.8 flushed).
            undelivered = self.producer.flush(self.settings.transaction_timeout_ms / 1000)
            self.progress()
            if undelivered or self.broker_lost:  # the broker went away in this transaction
                return self._give_up(f"the broker is unreachable ({undelivered} outputs undelivered)", records)
            if self._group_metadata is None:
                self._group_metadata = self.consumer.consumer_group_metadata()
            try:
                self._send_offsets([TopicPartition(t, p, o, metadata=m) if m else TopicPartition(t, p, o)
                                    for (t, p), (o, m) in offsets.items()])
            except CallHung as hung:
                return self._give_up(f"{hung}, past its timeout (librdkafka#5456); the producer is left "
                                     f"behind ({self.abandoned} so far)", records, close_old=False)
            finally:
                self.progress()
            self._commit_with_retry()
            self._open = False
        except KafkaException as exc:
            self._group_metadata = None  # a new generation fences the old metadata: ask again
            error: KafkaError = exc.args[0]
            if fenced(error):  # the coordinator aborted it (see fenced)
                return self._give_up(f"the broker ended the transaction: {error}", records)
            if error.txn_requires_abort():
                log.warning("%s: transaction aborted (%s); %d records to redo", self.name, error, len(records))
                self._abort()
                self.metrics.retries.labels(self.name, "transaction_aborted").inc()
                return False
            if error.retriable():  # the broker did not answer in time: an outage, a restart
                return self._give_up(str(error), records)
            raise
        self.metrics.transaction_seconds.labels(self.name).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.name).observe(len(records))
        self._begin_ahead()
        return True

    def _crash_mid_transaction(self) -> None:
        """Fault injection (TICKETFLOW_CRASH_BEFORE_COMMIT): die with the outputs in the log
        but the transaction open, the worst moment for a crash."""
        self.producer.flush(30)
        log.critical("%s: injected crash before commit %d", self.name, self._commits)
        os._exit(137)

    def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        """The transaction's input offsets, on the guard's thread when guarded: a call still
        inside librdkafka ``OVERRUN_S`` past its timeout raises CallHung here, and the guard
        and the producer are replaced (the stuck thread keeps both)."""
        timeout_s = self.settings.transaction_timeout_ms / 1000
        if self._offsets_calls is None:
            self.producer.send_offsets_to_transaction(offsets, self._group_metadata, timeout_s)
            return
        try:
            self._offsets_calls.call(self.producer.send_offsets_to_transaction, offsets, self._group_metadata,
                                     timeout_s, wait_s=timeout_s + OVERRUN_S)
        except CallHung:
            self.abandoned += 1
            self.metrics.retries.labels(self.name, "kafka_call_hung").inc()
            self._offsets_calls = GuardedCalls(f"offsets-{self.name}")
            raise

    def _give_up(self, reason: str, records: Sequence[Message], close_old: bool = True) -> bool:
        """The open transaction left to the broker to abort (a new producer fences it); the
        caller redoes its records. Always False, what ``commit`` returns."""
        log.warning("%s: transaction given up (%s); %d records to redo on a new producer",
                    self.name, reason, len(records))
        self._renew_producer(close_old)
        self.metrics.retries.labels(self.name, "transaction_aborted").inc()
        return False

    def _abort(self) -> None:
        """Abort the open transaction; a new producer when the broker does not confirm it."""
        try:
            self.producer.abort_transaction(self.settings.transaction_timeout_ms / 1000)
            self._open = False
        except KafkaException as exc:
            if not (exc.args[0].retriable() or fenced(exc.args[0])):
                raise
            log.warning("%s: abort not confirmed (%s)", self.name, exc.args[0])
            self._renew_producer()

    def _commit_with_retry(self) -> None:
        while True:
            try:
                self.producer.commit_transaction(self.settings.transaction_timeout_ms / 1000)
                return
            except KafkaException as exc:
                if exc.args[0].retriable():
                    log.warning("%s: commit not yet confirmed (%s); retrying", self.name, exc.args[0])
                    self.progress()
                    continue
                raise

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Consume the partition again from ``offset`` (unless it was revoked meanwhile: its
        new owner resumes from the committed offset)."""
        try:
            self.consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.info("%s: not rewinding %s/%d: %s", self.name, topic, partition, exc)


def _headers(message: Message) -> dict[str, bytes]:
    headers: list[tuple[str, bytes | str | None]] = list(message.headers() or [])  # type: ignore[arg-type]
    return {name: (value.encode() if isinstance(value, str) else value or b"") for name, value in headers}
