"""One consumer per gateway process, fanned out to every request that waits or streams.

The consumer reads the pipeline's own topics (no consumer group: every gateway process sees
every partition) and turns records into a ticket's progress events: ``accepted``
(``tickets.accepted``), ``cache`` (a miss on ``tickets.uncached``; a hit is a resolution by
the cache), ``routed`` and ``agent_step`` (``agent.steps.*``), ``resolved``
(``tickets.responses``). Each event's id is its place in a ticket's life (``10`` accepted,
``20`` cache, ``30`` routed, ``40+n`` agent step n, ``90`` resolved), the same in every
gateway process, so a client that reconnects elsewhere resumes with ``Last-Event-ID``.

Resolutions are also written to Redis (:class:`~pipeline.gateway.status.TicketStatus`), so
``GET /v1/tickets/{id}`` answers after the events have left memory or the process. On start
the consumer begins ``catchup_s`` seconds back (``offsets_for_times``): answers produced
while no gateway ran are recorded too.

Only resolutions are decoded as they come. A progress record (an accepted ticket, a cache
miss, an agent step with its whole transcript) is kept as its bytes, under the ticket id of
its Kafka key, and decoded when someone asks: an event stream listening to that ticket (then
at once, on the consumer's thread) or a resumed stream reading its history. Decoding every
progress record cost the gateway's process most of its CPU at 200 requests/s, and held
the interpreter lock while waiting requests were due to be woken.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

from pipeline.events import AgentStep, TicketResolved, TicketSubmitted
from pipeline.serde import AvroSerde
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ACCEPTED, CACHE, ROUTED, AGENT, RESOLVED = 10, 20, 30, 40, 90
#: decoded events handed to the event loop at a time (a consumed batch holds up to 500 records)
DELIVER_EVERY = 32
Key = tuple[str, str]  # (tenant, ticket id)


@dataclass(frozen=True)
class Progress:
    id: int
    event: str
    data: dict[str, Any]
    seen_ms: float = 0.0  # when this gateway read it (wall clock, ms)

    def sse(self) -> str:
        return f"id: {self.id}\nevent: {self.event}\ndata: {json.dumps(self.data, sort_keys=True)}\n\n"


def resolution(answer: TicketResolved) -> dict[str, Any]:
    """A resolved ticket as the gateway shows it."""
    return {"ticket_id": answer.ticket_id, "status": "resolved", "path": answer.path, "answer": answer.answer,
            "resolution_key": answer.resolution_key, "escalation_reason": answer.escalation_reason,
            "created_at": answer.created_at, "resolved_at": answer.resolved_at,
            "cost_usd": round(answer.cost_micros / 1e6, 6), "end_to_end_ms": answer.end_to_end_ms}


@dataclass(frozen=True)
class _Raw:
    """A progress record not decoded yet (nobody listened to its ticket when it came)."""

    topic: str  # the catalog name
    value: bytes
    seen_ms: float


@dataclass
class _Ticket:
    events: list[Progress] = field(default_factory=list)
    listeners: list[asyncio.Queue[Progress]] = field(default_factory=list)
    streams: int = 0  # listeners that want every progress event, not only the resolution


class FanOut:
    """The consumer thread and the in-memory progress of recent tickets."""

    def __init__(self, settings: Settings, serde: AvroSerde, loop: asyncio.AbstractEventLoop,
                 record_resolved: Callable[[list[tuple[Key, dict[str, Any]]]], None],
                 catchup_s: float = 900.0, keep: int = 50_000, keep_raw_bytes: int = 64 << 20) -> None:
        self.settings = settings
        self.serde = serde
        self.loop = loop
        self.record_resolved = record_resolved
        self.catchup_s = catchup_s
        self.keep = keep
        self.keep_raw_bytes = keep_raw_bytes  # undecoded progress kept, at most (an agent step holds its transcript)
        self.raw_bytes = 0
        self.tickets: OrderedDict[Key, _Ticket] = OrderedDict()
        #: undecoded progress records by ticket id (the tenant is inside the record)
        self.raw: OrderedDict[str, list[_Raw]] = OrderedDict()
        #: ticket ids whose progress records the consumer decodes as they come (an event
        #: stream listens); read by the consumer's thread, changed by the event loop
        self.streamed: set[str] = set()
        self.decoded = 0  # records decoded, by the consumer and on demand (for the benchmark)
        self.topics = {settings.topic_prefix + t: t for t in ("tickets.accepted", "tickets.uncached",
                                                              "agent.steps.interactive", "agent.steps.batch",
                                                              "tickets.responses")}
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.lag_ms = 0.0  # produce-to-seen delay of the last record
        self._read_to: dict[tuple[str, int], int] = {}  # next offset per partition, for a rebuilt consumer
        self._thread = threading.Thread(target=self._run, name="gateway-fanout", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    # -- the event loop's side -------------------------------------------------------------

    def history(self, key: Key) -> list[Progress]:
        self._decode_raw(key[1])
        ticket = self.tickets.get(key)
        return list(ticket.events) if ticket is not None else []

    def resolved(self, key: Key) -> Progress | None:
        """The ticket's resolution when this process has read it (its progress left undecoded)."""
        ticket = self.tickets.get(key)
        return next((e for e in ticket.events if e.id == RESOLVED), None) if ticket is not None else None

    def listen(self, key: Key, progress: bool = True) -> asyncio.Queue[Progress]:
        """A queue of ``key``'s events from now on (call :meth:`unlisten` when done); with
        ``progress=False`` the resolution is all the listener waits for, and the ticket's
        progress records stay undecoded."""
        queue: asyncio.Queue[Progress] = asyncio.Queue()
        ticket = self._ticket(key)
        ticket.listeners.append(queue)
        if progress:
            ticket.streams += 1
            self.streamed.add(key[1])
        return queue

    def unlisten(self, key: Key, queue: asyncio.Queue[Progress], progress: bool = True) -> None:
        ticket = self.tickets.get(key)
        if ticket is not None and queue in ticket.listeners:
            ticket.listeners.remove(queue)
            if progress:
                ticket.streams -= 1
                if ticket.streams <= 0:
                    self.streamed.discard(key[1])

    def _decode_raw(self, ticket_id: str) -> None:
        """The ticket's undecoded progress records, decoded and delivered now."""
        pending = self.raw.pop(ticket_id, None)
        if not pending:
            return
        self.raw_bytes -= sum(len(r.value) for r in pending)
        items: list[tuple[Key, Progress]] = []
        for raw in pending:
            items.extend(self._decoded(raw.topic, raw.value, raw.seen_ms))
        self._deliver(items, [])

    def _ticket(self, key: Key) -> _Ticket:
        ticket = self.tickets.get(key)
        if ticket is None:
            ticket = self.tickets[key] = _Ticket()
            while len(self.tickets) > self.keep:
                old_key, old = next(iter(self.tickets.items()))
                if old.listeners:  # someone still listens: keep it, stop trimming
                    break
                del self.tickets[old_key]
        return ticket

    def _deliver(self, items: list[tuple[Key, Progress]], raw: list[tuple[str, _Raw]]) -> None:
        for ticket_id, record in raw:
            if ticket_id in self.streamed:  # a stream began listening after the consumer looked
                items = [*items, *self._decoded(record.topic, record.value, record.seen_ms)]
                continue
            self.raw.setdefault(ticket_id, []).append(record)
            self.raw_bytes += len(record.value)
            # the oldest tickets' progress goes first (their resolutions stay, in memory and Redis)
            while len(self.raw) > self.keep or (self.raw_bytes > self.keep_raw_bytes and len(self.raw) > 1):
                _, dropped = self.raw.popitem(last=False)
                self.raw_bytes -= sum(len(r.value) for r in dropped)
        for key, progress in items:
            ticket = self._ticket(key)
            if any(e.id == progress.id for e in ticket.events):
                continue  # the same event read again (catch-up, a redelivery)
            ticket.events.append(progress)
            ticket.events.sort(key=lambda e: e.id)
            for queue in ticket.listeners:
                queue.put_nowait(progress)

    # -- the consumer thread ---------------------------------------------------------------

    def _run(self) -> None:
        """Read until closed. A broker error (no leader yet, the broker down) is not the end:
        the consumer is rebuilt after a pause and resumes where it had read to."""
        pause = 0.5
        while not self.stop.is_set():
            try:
                self._consume()
                return
            except Exception as exc:  # the health check reports the fan-out down until it is back
                log.warning("gateway fan-out: %s; retrying in %.1f s", exc, pause)
                self.stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _consume(self) -> None:
        consumer = Consumer({**self.settings.kafka_common(), "group.id": f"gateway-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "isolation.level": "read_committed",
                             "fetch.wait.max.ms": 10, "enable.partition.eof": False})
        try:
            consumer.assign(self._start_positions(consumer))
            self.ready.set()
            while not self.stop.is_set():
                message = consumer.poll(0.1)
                if message is None:
                    continue
                batch = [message, *consumer.consume(num_messages=499, timeout=0)]
                self._handle(batch)
        finally:
            self.ready.clear()
            consumer.close()

    def _start_positions(self, consumer: Consumer) -> list[TopicPartition]:
        """Where a partition was read to before a restart of the consumer; else ``catchup_s`` back."""
        since = int((time.time() - self.catchup_s) * 1000)
        wanted, known = [], []
        for topic in self.topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"topic {topic}: {metadata.error}")
            for p in metadata.partitions:
                if (topic, p) in self._read_to:
                    known.append(TopicPartition(topic, p, self._read_to[topic, p]))
                else:
                    wanted.append(TopicPartition(topic, p, since))
        found = consumer.offsets_for_times(wanted, timeout=10) if wanted else []
        return known + [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                        for tp in found]

    def _handle(self, messages: list[Any]) -> None:
        items: list[tuple[Key, Progress]] = []
        raw: list[tuple[str, _Raw]] = []
        resolved: list[tuple[Key, dict[str, Any]]] = []
        for message in messages:
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("gateway fan-out: %s", message.error())
                continue
            self._read_to[message.topic(), message.partition()] = message.offset() + 1
            topic = self.topics.get(message.topic(), "")
            seen = time.time() * 1000
            self.lag_ms = max(0.0, seen - message.timestamp()[1])
            key = message.key()
            ticket_id = key.decode("utf-8", "replace") if key else None
            if topic != "tickets.responses" and ticket_id is not None and ticket_id not in self.streamed:
                raw.append((ticket_id, _Raw(topic, message.value(), seen)))  # decoded if someone asks
                continue
            for found in self._decoded(topic, message.value(), seen):
                items.append(found)
                if found[1].id == RESOLVED:
                    resolved.append((found[0], found[1].data))
            if len(items) >= DELIVER_EVERY:  # a big batch: wake the first waiters before decoding the rest
                self.loop.call_soon_threadsafe(self._deliver, items, raw)
                items, raw = [], []
        if items or raw:  # waiters first (GET reads memory before Redis), then Redis, however long it is down
            self.loop.call_soon_threadsafe(self._deliver, items, raw)
        if resolved:
            self.record_resolved(resolved)

    def _decoded(self, topic: str, value: bytes, seen_ms: float) -> list[tuple[Key, Progress]]:
        """A record's progress events, stamped with when this gateway read it (none for a
        record the pipeline dead-letters: not the gateway's to judge)."""
        try:
            found = self._progress(topic, value)
        except Exception as exc:
            log.debug("gateway fan-out: skipping an undecodable record of %s: %s", topic, exc)
            return []
        finally:
            self.decoded += 1
        return [(key, Progress(progress.id, progress.event, progress.data, seen_ms)) for key, progress in found]

    def _progress(self, topic: str, value: bytes) -> list[tuple[Key, Progress]]:
        if topic == "tickets.responses":
            answer = TicketResolved.from_record(self.serde.decode(TicketResolved.SCHEMA, value))
            key = (answer.tenant_id, answer.ticket_id)
            done = (key, Progress(RESOLVED, "resolved", resolution(answer)))
            if answer.path == "cache":
                return [(key, Progress(CACHE, "cache", {"ticket_id": answer.ticket_id, "hit": True,
                                                        "similarity": answer.cache_similarity})), done]
            return [done]
        if topic in ("tickets.accepted", "tickets.uncached"):
            ticket = TicketSubmitted.from_record(self.serde.decode(TicketSubmitted.SCHEMA, value))
            if ticket.replay_tag:
                return []
            key = (ticket.tenant_id, ticket.ticket_id)
            if topic == "tickets.accepted":
                return [(key, Progress(ACCEPTED, "accepted", {"ticket_id": ticket.ticket_id}))]
            decision = ticket.cache_decision
            return [(key, Progress(CACHE, "cache", {"ticket_id": ticket.ticket_id, "hit": False,
                                                    "similarity": getattr(decision, "similarity", None)}))]
        step = AgentStep.from_record(self.serde.decode(AgentStep.SCHEMA, value))
        if step.replay_tag:
            return []
        key = (step.tenant_id, step.ticket_id)
        if step.step == 0:  # the router's hand-off to the agent
            return [(key, Progress(ROUTED, "routed", {"ticket_id": step.ticket_id, "workflow": step.workflow,
                                                      "intent": step.intent}))]
        return [(key, Progress(AGENT + min(step.step, 49), "agent_step", {
            "ticket_id": step.ticket_id, "step": step.step, "tier": step.model_tier,
            "tokens": step.tokens_in + step.tokens_out, "cost_usd": round(step.cost_micros / 1e6, 6)}))]
