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
    embedding: bytes | None = None  # float32 little-endian, of cache_text (cache stage -> router)
    embedding_model: str | None = None

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
    confidence: float | None = None  # the agent's, in its resolution key
    cache_entry_id: str | None = None  # a cache hit's entry
    embedding: bytes | None = None  # float32 little-endian, of cache_text (a cacheable answer -> cache writer)
    embedding_model: str | None = None

    SCHEMA = "TicketResolved"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TicketResolved:
        return cls(**record)

    def for_readers(self) -> TicketResolved:
        """Without the cache's embedding (1.5 KB of float32 for the cache writer): what JSON
        readers (``results --json``, the JSON egress) get."""
        return dataclasses.replace(self, embedding=None, embedding_model=None)


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


CacheOp = Literal["upsert", "purge", "confirm", "delete"]


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
    source: str | None = None  # provenance (pipeline.cache.index.SOURCES); None: legacy
    model_tier: str | None = None
    confidence: float | None = None
    embedding: bytes | None = None  # float32 little-endian, of text (an upsert's, when it came along)
    embedding_model: str | None = None

    SCHEMA = "CacheUpdate"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CacheUpdate:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of an agent's transcript."""

    role: str  # system, user, assistant, tool
    content: str
    tool_call_id: str | None = None
    tool_name: str | None = None
    tool_arguments: str | None = None  # JSON object


@dataclass(frozen=True, slots=True)
class AgentStep:
    """The whole state of one ticket's agent workflow before its next step (event-sourced)."""

    step_id: str
    ticket_id: str
    tenant_id: str
    workflow: str
    step: int
    ticket: bytes  # the TicketSubmitted that started the workflow, single-object encoded
    lane: Lane = "interactive"
    model_tier: str = "cheap"
    allowed_tools: list[str] = field(default_factory=list)
    transcript: list[Message] = field(default_factory=list)
    budget_profile: str = "default"
    reservation_micros: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_micros: int = 0
    models: list[str] = field(default_factory=list)
    stage_times: dict[str, int] = field(default_factory=dict)
    replay_tag: str | None = None
    # The router's facts: typed control state, rendered into the prompt only when a request
    # is built (pipeline.agent.prompt.build_request); code reads these, never the prompt.
    route: str | None = None
    intent: str | None = None  # None: the router abstained
    candidates: list[str] = field(default_factory=list)
    tool_call_cap: int = 0  # fails closed: a step that does not say is offered no tools
    classify: bool = False
    signed_in: bool = False
    entities: dict[str, str] = field(default_factory=dict)

    SCHEMA = "AgentStep"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AgentStep:
        values = dict(record)
        values["transcript"] = [Message(**m) for m in record.get("transcript", [])]
        return cls(**values)


ReplyTo = Literal["router", "agent"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A request to run one tool for one ticket (see schemas/avro/tool_call)."""

    call_id: str  # deterministic; the idempotency key of side-effecting tools
    ticket_id: str
    tenant_id: str
    tool: str
    arguments: str  # JSON object
    route: str  # the rule whose allowlist admitted the tool
    reply_to: ReplyTo
    requested_at: int
    step: bytes | None = None  # the state to continue, single-object encoded

    SCHEMA = "ToolCall"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ToolCall:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    ticket_id: str
    tenant_id: str
    tool: str
    ok: bool
    reply_to: ReplyTo
    completed_at: int
    result: str | None = None  # JSON document
    error_class: str | None = None
    error_message: str | None = None
    cached: bool = False
    latency_ms: float = 0.0
    route: str = ""
    attempts: int = 1
    step: bytes | None = None

    SCHEMA = "ToolResult"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ToolResult:
        return cls(**record)


UsageKind = Literal["llm", "embedding", "tool"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One LLM call, embedding batch or tool call (see schemas/avro/usage_record)."""

    record_id: str
    tenant_id: str
    workflow: str
    step: str
    kind: UsageKind
    provider: str
    model: str
    occurred_at: int
    ticket_id: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_micros: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    outcome: str = "ok"
    attempt: int = 1

    SCHEMA = "UsageRecord"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UsageRecord:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class ToolInvalidation:
    """The data behind ``data_source`` changed for a tenant: drop its cached tool results."""

    tenant_id: str
    data_source: str
    created_at: int
    reason: str = ""

    SCHEMA = "ToolInvalidation"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ToolInvalidation:
        return cls(**record)


FeedbackVerdict = Literal["confirm", "reject"]


@dataclass(frozen=True, slots=True)
class CacheFeedback:
    """A support desk's verdict on an answer (see schemas/avro/cache_feedback), on ``tickets.feedback``."""

    ticket_id: str
    tenant_id: str
    verdict: FeedbackVerdict
    created_at: int
    cache_entry_id: str | None = None
    correct_key: str | None = None
    reviewer: str | None = None
    replay_tag: str | None = None

    SCHEMA = "CacheFeedback"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CacheFeedback:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class CacheAudit:
    """One audited cache hit and the tenant's running estimate (see schemas/avro/cache_audit)."""

    tenant_id: str
    ticket_id: str
    served_key: str
    audit_path: str
    agreed: bool
    audited: int
    agreed_total: int
    precision_estimate: float
    precision_low: float
    precision_high: float
    created_at: int
    audit_key: str | None = None
    entry_id: str | None = None
    policy_level: int = 0

    SCHEMA = "CacheAudit"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CacheAudit:
        return cls(**record)


CostScope = Literal["ticket", "tenant", "workflow", "step", "model"]


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Aggregated usage and cost (see schemas/avro/cost_summary): one per ticket when it
    resolves, and per tenant, workflow, step or model per window (the latest record of a
    (scope, key, window) holds its running total)."""

    scope: CostScope
    scope_key: str
    tenant_id: str
    window_start: int
    window_end: int
    tickets: int = 0
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_micros: int = 0
    budget_micros: int | None = None
    by_model_micros: dict[str, int] = field(default_factory=dict)
    path: str | None = None  # v2, scope ticket: what answered it, how fast, in which replay
    end_to_end_ms: float | None = None
    ttft_ms: float | None = None
    replay_tag: str | None = None

    SCHEMA = "CostSummary"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CostSummary:
        return cls(**record)


Event = (TicketSubmitted | TicketResolved | DeadLetter | CacheUpdate | AgentStep | ToolCall | ToolResult
         | UsageRecord | ToolInvalidation | CostSummary | CacheFeedback | CacheAudit)
E = TypeVar("E", TicketSubmitted, TicketResolved, DeadLetter, CacheUpdate, AgentStep, ToolCall, ToolResult,
            UsageRecord, ToolInvalidation, CostSummary, CacheFeedback, CacheAudit)


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
    transcript = record.get("transcript")
    if transcript:
        record["transcript"] = [dataclasses.asdict(m) for m in transcript]
    return record
