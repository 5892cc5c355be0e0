"""Typed event models. Field names and meanings match the Avro schemas in ``schemas/avro``.

Records travel as dicts inside the serde; processors see these frozen dataclasses.
Timestamps are milliseconds since the Unix epoch; money is integer micro-dollars.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Lane = Literal["interactive", "batch"]
ResolutionPath = Literal["cache", "rule", "tool", "agent", "escalated"]
LANES: tuple[Lane, ...] = ("interactive", "batch")


@dataclass(frozen=True, slots=True)
class CacheDecision:
    hit: bool
    reason: str
    similarity: float | None = None
    resolution_key: str | None = None
    neighbours: int = 0


@dataclass(frozen=True, slots=True)
class TicketSubmitted:
    ticket_id: str
    tenant_id: str
    body: str
    customer_id: str | None = None
    channel: str = "api"
    lane: Lane = "interactive"
    priority: int = 0
    subject: str | None = None
    locale: str = "en"
    created_at: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    replay_tag: str | None = None
    cache_text: str | None = None
    stage_times: dict[str, int] = field(default_factory=dict)
    cache_decision: CacheDecision | None = None

    SCHEMA = "TicketSubmitted"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TicketSubmitted:
        decision = record.get("cache_decision")
        values = dict(record)
        values["cache_decision"] = CacheDecision(**decision) if decision else None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class TicketResolved:
    ticket_id: str
    tenant_id: str
    answer: str
    path: ResolutionPath
    created_at: int
    resolved_at: int
    customer_id: str | None = None
    lane: Lane = "interactive"
    resolution_key: str | None = None
    models: list[str] = field(default_factory=list)
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_micros: int = 0
    stage_latency_ms: dict[str, float] = field(default_factory=dict)
    end_to_end_ms: float = 0.0
    ttft_ms: float | None = None
    cache_similarity: float | None = None
    escalation_reason: str | None = None
    replay_tag: str | None = None
    cacheable: bool = False
    cache_text: str | None = None

    SCHEMA = "TicketResolved"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TicketResolved:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source_topic: str
    source_partition: int
    source_offset: int
    processor: str
    error_class: str
    error_message: str
    failed_at: int
    retryable: bool = False
    attempt: int = 1
    key: bytes | None = None
    value: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)

    SCHEMA = "DeadLetter"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DeadLetter:
        return cls(**record)


CacheOp = Literal["upsert", "purge"]


@dataclass(frozen=True, slots=True)
class CacheUpdate:
    """A change to the semantic cache that every replica applies (see schemas/avro/cache_update)."""

    tenant_id: str
    op: CacheOp
    created_at: int
    entry_id: str | None = None
    text: str | None = None
    answer: str | None = None
    resolution_key: str | None = None
    kb_version: str | None = None
    expires_at: int | None = None

    SCHEMA = "CacheUpdate"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CacheUpdate:
        return cls(**record)


Event = TicketSubmitted | TicketResolved | DeadLetter | CacheUpdate
E = TypeVar("E", TicketSubmitted, TicketResolved, DeadLetter, CacheUpdate)


_FIELDS: dict[type, tuple[str, ...]] = {}


def to_record(event: Event) -> dict[str, Any]:
    """The Avro record (a dict) of an event; nested dataclasses become dicts.

    Shallow on purpose: ``dataclasses.asdict`` deep-copies every value and was the largest
    cost per record in the runtime's profile. Maps and lists are shared, not copied.
    """
    names = _FIELDS.get(type(event))
    if names is None:
        names = _FIELDS[type(event)] = tuple(f.name for f in dataclasses.fields(event))
    record = {name: getattr(event, name) for name in names}
    decision = record.get("cache_decision")
    if decision is not None:
        record["cache_decision"] = dataclasses.asdict(decision)
    return record
