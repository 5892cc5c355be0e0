"""``ticketflow report``: is ticketflow operating economically? Cost, tokens and calls per
tenant, workflow, step, model and path; deflection by path; latency and time-to-first-token
percentiles; cache hit rate and the audit's precision; budget use.

Everything is read from what the pipeline already publishes, never a second bookkeeping:
``pipeline.metrics`` (a ``CostSummary`` per resolved ticket with its path and latency, the
tenant's daily budget on its window records, and the cache audit's running estimate) and
``llm.usage`` (one record per LLM call, embedding batch or tool call; deduplicated by record
id, as the accounting does). Both topics are read from ``--since`` on (``offsets_for_times``),
and records are kept by their own times: tickets by when they resolved, calls by when they
were made.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.cache.audit import AUDIT_WORKFLOW
from pipeline.client import TicketflowClient
from pipeline.demo import percentiles
from pipeline.errors import DecodeError
from pipeline.events import CacheAudit, CostSummary, UsageRecord
from pipeline.replay.window import iso
from pipeline.topic_reader import read_to_end

DEFLECTED = ("cache", "rule", "tool")
# A ticket's summary is written when it resolves, which may be a while after its calls.
READ_MARGIN_MS = 15 * 60 * 1000


@dataclass
class Records:
    """What the report is computed from, already cut to the window and the tenant."""

    tickets: dict[str, CostSummary] = field(default_factory=dict)  # customers' tickets, by id
    other_tickets: dict[str, CostSummary] = field(default_factory=dict)  # replays and audits
    usage: dict[str, UsageRecord] = field(default_factory=dict)  # by record id
    audits: dict[str, CacheAudit] = field(default_factory=dict)  # the latest per tenant
    budgets: dict[str, int] = field(default_factory=dict)  # tenant -> daily budget, micro-dollars


def read(client: TicketflowClient, since_ms: int, until_ms: int, tenant: str | None) -> Records:
    records = Records()
    conf = client.settings.kafka_common()

    def wanted(tenant_id: str, at: int) -> bool:
        return (tenant is None or tenant_id == tenant) and since_ms <= at < until_ms

    for message in read_to_end(conf, client.topic("pipeline.metrics"), since_ms=since_ms - READ_MARGIN_MS):
        value = message.value() or b""
        try:
            summary = CostSummary.from_record(client.serde.decode(CostSummary.SCHEMA, value))
        except DecodeError:
            try:
                audit = CacheAudit.from_record(client.serde.decode(CacheAudit.SCHEMA, value))
            except DecodeError:
                continue
            if wanted(audit.tenant_id, audit.created_at):
                latest = records.audits.get(audit.tenant_id)
                if latest is None or audit.audited >= latest.audited:
                    records.audits[audit.tenant_id] = audit
            continue
        if summary.scope == "tenant" and summary.budget_micros is not None and \
                (tenant is None or summary.tenant_id == tenant):
            records.budgets[summary.tenant_id] = summary.budget_micros
        if summary.scope == "ticket" and wanted(summary.tenant_id, summary.window_end):
            book = records.other_tickets if summary.replay_tag else records.tickets
            book[summary.scope_key] = summary
    for message in read_to_end(conf, client.topic("llm.usage"), since_ms=since_ms - READ_MARGIN_MS):
        try:
            usage = UsageRecord.from_record(client.serde.decode(UsageRecord.SCHEMA, message.value() or b""))
        except DecodeError:
            continue
        if wanted(usage.tenant_id, usage.occurred_at):
            records.usage[usage.record_id] = usage
    return records


def _usd(micros: float) -> float:
    return round(micros / 1_000_000, 6)


def _group(usage: Iterable[UsageRecord], key: Any) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "tokens_in": 0, "tokens_out": 0,
                                                              "tokens_cached": 0, "cost_micros": 0})
    for u in usage:
        g = groups[key(u)]
        g["calls"] += 1
        g["tokens_in"] += u.tokens_in
        g["tokens_out"] += u.tokens_out
        g["tokens_cached"] += u.tokens_cached
        g["cost_micros"] += u.cost_micros
    return {k: {**{n: v for n, v in g.items() if n != "cost_micros"}, "cost_usd": _usd(g["cost_micros"])}
            for k, g in sorted(groups.items(), key=lambda kv: -kv[1]["cost_micros"])}


def step_of(usage: UsageRecord) -> str:
    """``step 0``, ``step 1``, ... of an agent call (its step id ends with the step number)."""
    number = usage.step.rsplit(":", 1)[-1]
    return f"step {number}" if number.isdigit() else usage.step or "-"


def summarise(records: Records, since_ms: int, until_ms: int, tenant: str | None) -> dict[str, Any]:
    tickets = list(records.tickets.values())
    calls = [u for u in records.usage.values() if u.kind == "llm" and u.outcome == "ok"]
    failed = Counter(u.outcome for u in records.usage.values() if u.kind == "llm" and u.outcome != "ok")
    paths = Counter(t.path or "unknown" for t in tickets)
    by_path = {}
    for path, n in sorted(paths.items(), key=lambda kv: -kv[1]):
        of_path = [t for t in tickets if (t.path or "unknown") == path]
        by_path[path] = {"tickets": n, "share": round(n / len(tickets), 4),
                         "cost_usd": _usd(sum(t.cost_micros for t in of_path)),
                         "latency_ms": percentiles([t.end_to_end_ms for t in of_path if t.end_to_end_ms is not None])}
    audit_calls = [u for u in calls if u.workflow == AUDIT_WORKFLOW]
    replay_calls = [u for u in calls if "@" in u.step]  # a replay's step ids are ticket@tag:n
    days: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for u in records.usage.values():
        day = datetime.fromtimestamp(u.occurred_at / 1000, UTC).date().isoformat()
        days[u.tenant_id][day] += u.cost_micros
    budget = {t: {"daily_budget_usd": _usd(records.budgets[t]) if t in records.budgets else None,
                  "by_day": {d: {"spent_usd": _usd(v),
                                 "used": round(v / records.budgets[t], 4) if records.budgets.get(t) else None}
                             for d, v in sorted(per_day.items())}}
              for t, per_day in sorted(days.items())}
    cache_hits = paths.get("cache", 0)
    return {
        "since": iso(since_ms), "until": iso(until_ms), "tenant": tenant,
        "tickets": len(tickets),
        "cost_usd": _usd(sum(t.cost_micros for t in tickets)),
        "cost_per_ticket_usd": _usd(sum(t.cost_micros for t in tickets) / len(tickets)) if tickets else 0.0,
        "llm_spend_usd": _usd(sum(u.cost_micros for u in records.usage.values())),
        "audit_cost_usd": _usd(sum(u.cost_micros for u in audit_calls)),
        "replay_cost_usd": _usd(sum(u.cost_micros for u in replay_calls)),
        "llm_calls": len(calls), "llm_failed_attempts": dict(failed),
        "tokens": {k: sum(getattr(u, f"tokens_{k}") for u in calls) for k in ("in", "out", "cached")},
        "deflection_rate": round(sum(paths.get(p, 0) for p in DEFLECTED) / len(tickets), 4) if tickets else None,
        "by_path": by_path,
        "latency_ms": percentiles([t.end_to_end_ms for t in tickets if t.end_to_end_ms is not None]),
        "ttft_ms": {model: percentiles([u.ttft_ms for u in calls if u.model == model and u.ttft_ms is not None])
                    for model in sorted({u.model for u in calls})},
        "cost_by": {
            "tenant": _group(calls, lambda u: u.tenant_id),
            "workflow": _group(calls, lambda u: u.workflow),
            "step": _group((u for u in calls if u.workflow != AUDIT_WORKFLOW), step_of),
            "model": _group(calls, lambda u: u.model),
        },
        "cache": {"hit_rate": round(cache_hits / len(tickets), 4) if tickets else None, "hits": cache_hits,
                  "audit": {t: {"audited": a.audited, "precision_estimate": round(a.precision_estimate, 4),
                                "precision_ci95": [round(a.precision_low, 4), round(a.precision_high, 4)],
                                "policy_level": a.policy_level}
                            for t, a in sorted(records.audits.items())}},
        "budget": budget,
    }


def table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as one long table (``dimension``, ``key`` and the measures), for analysts."""
    rows = []
    for dimension, groups in report["cost_by"].items():
        for key, g in groups.items():
            rows.append({"dimension": dimension, "key": key, "tickets": None, **g})
    for path, p in report["by_path"].items():
        rows.append({"dimension": "path", "key": path, "tickets": p["tickets"], "calls": None, "tokens_in": None,
                     "tokens_out": None, "tokens_cached": None, "cost_usd": p["cost_usd"]})
    return rows
