"""The cache audit of a set of tickets, read back from Kafka (the demo's ``cache_audit``).

The audit requests are the audit tickets the cache stage put on ``tickets.uncached``; their
answers arrive on ``tickets.replay.responses`` (batch lane, so they may trail the customers'
answers by seconds); the verdicts are the ``CacheAudit`` records on ``pipeline.metrics``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pipeline.cache.audit import AuditTag, audited_ticket, is_audit, wilson
from pipeline.client import TicketflowClient
from pipeline.events import CacheAudit, TicketResolved, TicketSubmitted


def audit_requests(client: TicketflowClient, ids: set[str]) -> set[str]:
    """The audit tickets raised for ``ids`` (their own ids)."""
    return {t.ticket_id for t in client.events("tickets.uncached", TicketSubmitted, timeout_s=30)
            if is_audit(t.replay_tag) and audited_ticket(t.ticket_id) in ids}


def wait_for_audits(client: TicketflowClient, requested: set[str], timeout_s: float) -> list[TicketResolved]:
    """The audit answers of ``requested``, waiting up to ``timeout_s`` for the last of them."""
    deadline = time.monotonic() + timeout_s
    answers: dict[str, TicketResolved] = {}
    while True:
        for event in client.events("tickets.replay.responses", TicketResolved, timeout_s=30):
            if event.ticket_id in requested:
                answers.setdefault(event.ticket_id, event)
        if len(answers) >= len(requested) or time.monotonic() >= deadline:
            return list(answers.values())
        print(f"\rdemo: audits answered {len(answers)}/{len(requested)}", end="", file=sys.stderr, flush=True)
        time.sleep(2)


def audit_summary(client: TicketflowClient, ids: set[str], cache_hits: int, timeout_s: float = 240.0
                  ) -> dict[str, Any]:
    """``cache_audit`` of a run: audited hits, the pipeline's own estimate and interval, cost."""
    requested = audit_requests(client, ids)
    answers = wait_for_audits(client, requested, timeout_s)
    records = [r for r in client.events("pipeline.metrics", CacheAudit, timeout_s=30) if r.ticket_id in ids]
    verdicts = {r.ticket_id: r for r in records}  # once per audited ticket
    agreed = sum(r.agreed for r in verdicts.values())
    audited = len(verdicts)
    low, high = wilson(agreed, audited)
    disagreements = [{"ticket_id": r.ticket_id, "served_key": r.served_key, "audit_key": r.audit_key,
                      "audit_path": r.audit_path} for r in verdicts.values() if not r.agreed]
    tags = [AuditTag.parse(a.replay_tag) for a in answers]
    served = {tag.served_key for tag in tags if tag is not None}
    return {
        "requested": len(requested), "answered": len(answers), "audited": audited,
        "inconclusive": sum(a.path == "escalated" for a in answers),
        "share_of_hits": round(len(requested) / cache_hits, 4) if cache_hits else 0.0,
        "agreed": agreed, "precision_estimate": round(agreed / audited, 4) if audited else None,
        "precision_ci95": [round(low, 4), round(high, 4)],
        "policy_level": max((r.policy_level for r in records), default=0),
        "by_audit_path": {p: sum(r.audit_path == p for r in verdicts.values())
                          for p in sorted({r.audit_path for r in verdicts.values()})},
        "cost_usd": round(sum(a.cost_micros for a in answers) / 1_000_000, 6),
        "keys_audited": len(served), "disagreements": disagreements[:10],
    }
