"""The client side: produce tickets, read responses and dead letters.

``TicketflowClient`` is what ``ticketflow submit`` and ``ticketflow results`` use, and what
an application embeds. Its producer is idempotent (librdkafka leaves that off by default),
so a retried send never duplicates a ticket on the ingress topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from pipeline.errors import DecodeError, ServiceError
from pipeline.events import (
    CacheFeedback,
    CacheUpdate,
    DeadLetter,
    E,
    Event,
    TicketResolved,
    TicketSubmitted,
    ToolInvalidation,
    to_record,
)
from pipeline.serde import AvroSerde, ConfluentSchemaRegistry, SchemaCatalog
from pipeline.settings import Settings
from pipeline.topic_reader import TopicReader
from topics.catalog import INGRESS_MAX_BYTES, topic_name


@dataclass(frozen=True)
class Received:
    """A record read back, with the wall-clock time it was read (ms since the epoch)."""

    event: Any
    received_at: int


class TicketflowClient:
    def __init__(self, settings: Settings, serde: AvroSerde | None = None) -> None:
        self.settings = settings
        registry = (ConfluentSchemaRegistry(settings.schema_registry_url)
                    if settings.schema_registry_url else None)
        self.serde = serde or AvroSerde(SchemaCatalog.load(), registry)
        self._producer: Any = None

    def topic(self, name: str) -> str:
        return topic_name(self.settings.topic_prefix, name)

    # -- producing -----------------------------------------------------------------------

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = Producer({
                **self.settings.kafka_common(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": INGRESS_MAX_BYTES + 64 * 1024,
            })
        return self._producer

    def submit(self, tickets: Iterable[TicketSubmitted],
               on_sent: Callable[[TicketSubmitted], None] | None = None,
               flush: bool = True, rate_per_s: float | None = None) -> int:
        """Produce tickets to the ingress topic (keyed by ticket_id); returns how many.

        With ``flush`` (the default) it returns once every ticket is acknowledged; with
        ``rate_per_s``, at most that many tickets a second (a steady stream, not a burst).
        """
        topic = self.topic("tickets.ingress")
        count = 0
        next_at = time.monotonic()
        for ticket in tickets:
            if rate_per_s is not None:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at, time.monotonic() - 1.0) + 1.0 / rate_per_s
            if ticket.created_at is None:
                ticket = _with_created_at(ticket)
            value = self.serde.encode(TicketSubmitted.SCHEMA, to_record(ticket), topic)
            self.send_raw(topic, ticket.ticket_id.encode(), value)
            count += 1
            if on_sent is not None:
                on_sent(ticket)
        if flush:
            self.flush()
        return count

    def send_raw(self, topic: str, key: bytes | None, value: bytes,
                 headers: dict[str, bytes] | None = None,
                 on_written: Callable[[int, int], None] | None = None) -> None:
        """Produce bytes as they are (for JSON input, redrives and tests of bad input);
        ``on_written(partition, offset)`` is called once the broker acknowledged the record."""
        errors: list[str] = []

        def _delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            elif on_written is not None:
                on_written(msg.partition(), msg.offset())

        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=_delivered,
                                      headers=headers or {})
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        if errors:
            raise ServiceError(f"delivery to {topic} failed: {errors[0]}")

    def cache_updates(self, updates: Iterable[CacheUpdate]) -> int:
        """Produce cache updates (seeds, purges) keyed by tenant; returns once acknowledged."""
        return len(self.cache_updates_at(updates)[1])

    def cache_updates_at(self, updates: Iterable[CacheUpdate]) -> tuple[dict[int, int], list[CacheUpdate]]:
        """Like :meth:`cache_updates`; also returns the last offset written per partition, so
        that a caller can wait until the cache replicas have read that far."""
        topic = self.topic("cache.updates")
        last: dict[int, int] = {}
        sent = []

        def written(partition: int, offset: int) -> None:
            last[partition] = max(offset, last.get(partition, -1))

        for update in updates:
            self.send_raw(topic, update.tenant_id.encode(),
                          self.serde.encode(CacheUpdate.SCHEMA, to_record(update), topic), on_written=written)
            sent.append(update)
        self.flush()
        return last, sent

    def send(self, name: str, key: str, event: Event) -> None:
        """Produce one event to catalog topic ``name`` (encoded with its latest schema)."""
        topic = self.topic(name)
        self.send_raw(topic, key.encode(), self.serde.encode(type(event).SCHEMA, to_record(event), topic))

    def feedback(self, verdicts: Iterable[CacheFeedback]) -> int:
        """A support desk's verdicts on answers (``tickets.feedback``); returns once acknowledged."""
        count = 0
        for verdict in verdicts:
            self.send("tickets.feedback", verdict.ticket_id, verdict)
            count += 1
        self.flush()
        return count

    def invalidate_tools(self, tenant: str, data_source: str, reason: str = "") -> None:
        """Tell the tool caches that ``data_source`` changed for ``tenant``; returns once acknowledged."""
        self.send("tools.invalidations", tenant, ToolInvalidation(
            tenant_id=tenant, data_source=data_source, reason=reason, created_at=time.time_ns() // 1_000_000))
        self.flush()

    def events(self, name: str, event_type: type[E], timeout_s: float = 5.0) -> list[E]:
        """Every committed event on catalog topic ``name`` so far (read to the end)."""
        return [item.event for item in self._read(self.topic(name), event_type.SCHEMA, event_type.from_record,
                                                  timeout_s, lambda: False, idle_stop=True)]

    def flush(self, timeout_s: float = 60.0) -> None:
        if self._producer is not None and self._producer.flush(timeout_s) > 0:
            raise ServiceError(f"{len(self._producer)} records not delivered within {timeout_s} s")

    # -- consuming -----------------------------------------------------------------------

    def results(self, *, expect: int | None = None, timeout_s: float | None = None,
                ticket_ids: set[str] | None = None, drain: bool = False) -> Iterator[Received]:
        """TicketResolved records from the beginning of tickets.responses (read_committed).

        Stops after ``expect`` distinct tickets (of ``ticket_ids`` when given) or after
        ``timeout_s`` seconds, or (``drain``) at the end of every partition; yields every
        record, duplicates included.
        """
        seen: set[str] = set()
        for item in self._read(self.topic("tickets.responses"), TicketResolved.SCHEMA,
                               TicketResolved.from_record, timeout_s,
                               lambda: expect is not None and len(seen) >= expect,
                               idle_stop=drain):
            resolved: TicketResolved = item.event
            if ticket_ids is not None and resolved.ticket_id not in ticket_ids:
                continue
            seen.add(resolved.ticket_id)
            yield item

    def replay_results(self, tag: str, *, timeout_s: float | None = None,
                       done: Callable[[], bool] | None = None) -> Iterator[TicketResolved]:
        """The answers of replay ``tag`` on tickets.replay.responses (read_committed), from
        the beginning: until ``done()`` or ``timeout_s``; without a timeout, to the end."""
        for item in self._read(self.topic("tickets.replay.responses"), TicketResolved.SCHEMA,
                               TicketResolved.from_record, timeout_s, done or (lambda: False),
                               idle_stop=timeout_s is None):
            if item.event.replay_tag == tag:
                yield item.event

    def dead_letters(self, *, timeout_s: float = 5.0,
                     stop: Callable[[], bool] | None = None) -> Iterator[Received]:
        """DeadLetter records from the beginning of tickets.dlq."""
        yield from self._read(self.topic("tickets.dlq"), DeadLetter.SCHEMA, DeadLetter.from_record,
                              timeout_s, stop or (lambda: False), idle_stop=True)

    def _read(self, topic: str, schema: str, build: Callable[[dict[str, Any]], Any],
              timeout_s: float | None, done: Callable[[], bool],
              idle_stop: bool = False) -> Iterator[Received]:
        with TopicReader(self.settings.kafka_common(), topic) as reader:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while not done():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if idle_stop and reader.at_end:
                    return
                # A short timeout: arrival times feed latency reports, so never sit on a record.
                for message in reader.poll(timeout_s=0.01):
                    try:
                        record = self.serde.decode(schema, message.value() or b"")
                    except DecodeError:
                        continue  # not ours to judge here; the DLQ tooling shows such records
                    yield Received(build(record), time.time_ns() // 1_000_000)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(30)


def _with_created_at(ticket: TicketSubmitted) -> TicketSubmitted:
    import dataclasses

    return dataclasses.replace(ticket, created_at=time.time_ns() // 1_000_000)
