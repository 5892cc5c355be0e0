"""Every topic of the architecture, with the settings `ticketflow topics apply` enforces.

Names here are the defaults; every name gets ``TICKETFLOW_TOPIC_PREFIX`` in front.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000

# Ingress accepts records up to 16 MiB so that an oversized ticket reaches intake and is
# dead-lettered with its bytes, instead of being refused at produce time where nobody sees it.
INGRESS_MAX_BYTES = 16 * 1024 * 1024
# A dead letter carries the whole original record plus its envelope.
DLQ_MAX_BYTES = 2 * INGRESS_MAX_BYTES


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value_schema: str
    description: str
    partitions: int | None = None  # None: the configured default (TICKETFLOW_TOPIC_PARTITIONS)
    retention_ms: int = 7 * DAY_MS
    compacted: bool = False
    max_message_bytes: int | None = None
    dlq: str | None = "tickets.dlq"
    extra: dict[str, str] = field(default_factory=dict)
    value_format: str = "avro"  # "json": UTF-8 JSON objects (the schema's fields), for kcat and jq

    def configs(self) -> dict[str, str]:
        conf = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
            **self.extra,
        }
        if self.max_message_bytes is not None:
            conf["max.message.bytes"] = str(self.max_message_bytes)
        return conf


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec("tickets.ingress", "ticket_id", "TicketSubmitted", "users -> intake",
              retention_ms=30 * DAY_MS, max_message_bytes=INGRESS_MAX_BYTES),
    TopicSpec("tickets.accepted", "ticket_id", "TicketSubmitted", "intake -> cache"),
    TopicSpec("tickets.uncached", "ticket_id", "TicketSubmitted", "cache -> router"),
    TopicSpec("agent.steps.interactive", "ticket_id", "AgentStep", "router, tools -> agent"),
    TopicSpec("agent.steps.batch", "ticket_id", "AgentStep", "router, tools -> agent (batch lane)"),
    TopicSpec("tools.calls", "ticket_id", "ToolCall", "router, agent -> tools"),
    TopicSpec("tools.results", "ticket_id", "ToolResult", "tools -> router, agent"),
    TopicSpec("llm.usage", "tenant_id", "UsageRecord", "all -> accounting", retention_ms=30 * DAY_MS),
    TopicSpec("tickets.responses", "ticket_id", "TicketResolved", "any stage -> users, cache writer",
              retention_ms=30 * DAY_MS),
    # The same answers as JSON, for users without Avro tooling (kcat, jq, a log shipper):
    # written by the opt-in `egress-json` processor (TICKETFLOW_JSON_EGRESS=true).
    TopicSpec("tickets.responses.json", "ticket_id", "TicketResolved", "egress-json -> users (JSON)",
              retention_ms=30 * DAY_MS, value_format="json"),
    # Answers of replayed tickets and of the cache audit: never the customers' egress.
    TopicSpec("tickets.replay.responses", "ticket_id", "TicketResolved",
              "any stage -> replay reports, cache audit", retention_ms=30 * DAY_MS),
    # A support desk's verdicts on answers: confirm or reject the cache entry behind them.
    TopicSpec("tickets.feedback", "ticket_id", "CacheFeedback", "support desk -> cache feedback",
              retention_ms=30 * DAY_MS),
    # Every cache replica (one per cache worker with the embedded Qdrant Edge) reads all of it
    # and rebuilds from it: retention covers the longest cache TTL.
    TopicSpec("cache.updates", "tenant_id", "CacheUpdate", "cache writer, cache purge -> cache replicas",
              retention_ms=30 * DAY_MS),
    # Data changes behind cached tool results (a side-effecting tool, an operator); keyed by
    # tenant so that one tenant's invalidations stay in order.
    TopicSpec("tools.invalidations", "tenant_id", "ToolInvalidation", "tools, operators -> tool cache"),
    TopicSpec("pipeline.metrics", "tenant_id", "CostSummary|CacheAudit", "accounting, cache audit -> users",
              retention_ms=30 * DAY_MS),
    TopicSpec("tickets.dlq", "original key", "DeadLetter", "any -> operators, redrive",
              retention_ms=30 * DAY_MS, max_message_bytes=DLQ_MAX_BYTES, dlq=None),
)

_BY_NAME = {spec.name: spec for spec in CATALOG}


def spec(name: str) -> TopicSpec:
    return _BY_NAME[name]


def topic_name(prefix: str, name: str) -> str:
    """The physical topic name of catalog entry ``name`` under ``prefix``."""
    if name not in _BY_NAME:
        raise KeyError(f"{name!r} is not in the topic catalog")
    return f"{prefix}{name}"
