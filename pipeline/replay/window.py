"""Which tickets a replay re-runs: a time window of ``tickets.ingress``, or a file.

The window is found per partition with ``offsets_for_times`` (the first offset at or after
``--since``, and the first at or after ``--until``), so it is exact whatever the partitions'
sizes. Only original tickets count: a replay's own re-submissions (they carry a replay tag)
and records that do not decode are left out (the latter were dead-lettered by intake when
they arrived). When the log no longer reaches back to ``--since`` (retention deleted its
start), the window says so in ``warnings``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.client import TicketflowClient
from pipeline.errors import DecodeError, ServiceError, ValidationFailure
from pipeline.events import TicketSubmitted
from pipeline.ticket_files import read_tickets

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: datetime | None = None) -> int:
    """Epoch milliseconds of an ISO time (UTC unless it says otherwise) or of a duration
    back from now (``90s``, ``15m``, ``2h``, ``7d``, ``1w``, or combined: ``1h30m``)."""
    now = now or datetime.now(UTC)
    stripped = text.strip()
    if stripped and _DURATION.sub("", stripped.replace(" ", "")) == "" and _DURATION.search(stripped):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(stripped))
        return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailure(f"time {text!r} is neither an ISO time (2026-12-04T09:00) "
                                f"nor a duration back from now (2h, 30m, 7d)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Original:
    """A ticket as it arrived, and where."""

    ticket: TicketSubmitted
    partition: int = -1
    offset: int = -1
    timestamp: int = 0


@dataclass
class Window:
    since_ms: int | None
    until_ms: int | None
    originals: list[Original]
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> [start, end)
    skipped: dict[str, int] = field(default_factory=dict)  # why records were left out -> how many
    warnings: list[str] = field(default_factory=list)
    source: str = "tickets.ingress"

    @property
    def tickets(self) -> list[TicketSubmitted]:
        return [o.ticket for o in self.originals]

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "since": iso(self.since_ms), "until": iso(self.until_ms),
                "offsets": {str(p): list(r) for p, r in sorted(self.offsets.items())},
                "skipped": dict(self.skipped), "warnings": list(self.warnings)}


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO time in UTC, to the second."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def select(client: TicketflowClient, since_ms: int, until_ms: int | None, tenant: str | None = None,
           progress: Callable[[int], None] | None = None) -> Window:
    """The original tickets that arrived on ``tickets.ingress`` in ``[since, until)``."""
    settings = client.settings
    topic = client.topic("tickets.ingress")
    consumer = Consumer({**settings.kafka_common(), "group.id": "ticketflow-replay-reader",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    window = Window(since_ms, until_ms, [])
    try:
        ranges = _ranges(consumer, topic, since_ms, until_ms, window)
        window.offsets = {p: r for p, r in ranges.items() if r[1] > r[0]}
        _read(client, consumer, topic, window, tenant, progress)
    except KafkaException as exc:
        raise ServiceError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()
    window.originals.sort(key=lambda o: (o.timestamp, o.partition, o.offset))
    return window


def _ranges(consumer: Consumer, topic: str, since_ms: int, until_ms: int | None,
            window: Window) -> dict[int, tuple[int, int]]:
    metadata = consumer.list_topics(topic, timeout=10)
    if topic not in metadata.topics or not metadata.topics[topic].partitions:
        raise ServiceError(f"topic {topic} does not exist; run `ticketflow topics apply`")
    partitions = sorted(metadata.topics[topic].partitions)
    starts = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout=10)
    ends = (consumer.offsets_for_times([TopicPartition(topic, p, until_ms) for p in partitions], timeout=10)
            if until_ms is not None else None)
    ranges = {}
    for i, p in enumerate(partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        start = starts[i].offset if starts[i].offset >= 0 else high  # -1: nothing at or after since
        end = high if ends is None or ends[i].offset < 0 else ends[i].offset
        if start == low and low > 0:
            # The oldest record left is in the window: older ones may have been too.
            first = _timestamp_at(consumer, topic, p, low)
            if first is not None and first > since_ms:
                window.warnings.append(
                    f"partition {p}: retention has deleted offsets below {low}; the log starts at "
                    f"{iso(first)}, after --since {iso(since_ms)}: part of the window is gone")
        ranges[p] = (start, max(start, end))
    return ranges


def _timestamp_at(consumer: Consumer, topic: str, partition: int, offset: int) -> int | None:
    consumer.assign([TopicPartition(topic, partition, offset)])
    for _ in range(20):
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            stamp: int = message.timestamp()[1]
            consumer.unassign()
            return stamp
    consumer.unassign()
    return None


def _read(client: TicketflowClient, consumer: Consumer, topic: str, window: Window, tenant: str | None,
          progress: Callable[[int], None] | None) -> None:
    pending = dict(window.offsets)
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in pending.items()])
    idle = 0
    while pending:
        messages = consumer.consume(num_messages=500, timeout=1.0)
        idle = idle + 1 if not messages else 0
        if idle > 30:
            raise ServiceError(f"reading {topic} stalled with partitions {sorted(pending)} unfinished")
        for message in messages:
            partition = message.partition()
            error = message.error()
            if error is not None:
                # end of a partition: a read_committed view may end before the high watermark
                if partition in pending and error.code() == KafkaError._PARTITION_EOF:
                    del pending[partition]
                continue
            offset = message.offset()
            if partition is None or offset is None or partition not in pending:
                continue
            if offset >= pending[partition][1]:
                del pending[partition]
                continue
            if offset == pending[partition][1] - 1:
                del pending[partition]
            _keep(client, window, message, tenant)
            if progress is not None:
                progress(1)


def _keep(client: TicketflowClient, window: Window, message: object, tenant: str | None) -> None:
    value = message.value() or b""  # type: ignore[attr-defined]
    try:
        ticket = TicketSubmitted.from_record(client.serde.decode(TicketSubmitted.SCHEMA, value, allow_json=True))
    except (DecodeError, TypeError, ValueError):
        window.skipped["undecodable"] = window.skipped.get("undecodable", 0) + 1
        return
    if ticket.replay_tag:
        window.skipped["replayed"] = window.skipped.get("replayed", 0) + 1
        return
    if tenant is not None and ticket.tenant_id != tenant:
        window.skipped["other_tenant"] = window.skipped.get("other_tenant", 0) + 1
        return
    window.originals.append(Original(ticket, message.partition(), message.offset(),  # type: ignore[attr-defined]
                                     message.timestamp()[1]))  # type: ignore[attr-defined]


def from_file(path: Path, tenant: str | None = None) -> Window:
    """A batch job: the tickets of a CSV or JSONL file (as ``ticketflow submit`` reads them)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    with path.open(encoding="utf-8") as stream:
        tickets: Iterable[TicketSubmitted] = list(read_tickets(stream, id_prefix=f"job-{digest}"))
    window = Window(None, None, [], source=str(path))
    for ticket in tickets:
        if tenant is not None and ticket.tenant_id != tenant:
            window.skipped["other_tenant"] = window.skipped.get("other_tenant", 0) + 1
            continue
        window.originals.append(Original(ticket))
    return window
