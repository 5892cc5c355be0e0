"""Cache audit: compare an audited hit's key with the key the skipped path arrives at.

Reads ``tickets.replay.responses`` and keeps the answers of audit tickets
(:mod:`pipeline.cache.audit`). Per audit:

- the tenant's ledger counts it once (agreed or not); an escalated audit answer says nothing
  about the key and is not counted;
- a ``CacheAudit`` record with the tenant's running estimate and Wilson 95 % interval goes
  to ``pipeline.metrics`` (and the Prometheus gauges follow it);
- the audited entry: agreement confirms it (a provisional entry becomes trusted, source
  ``audit``); disagreement deletes it when it was written back from an answer (a copy, whose
  loss costs one future hit) or when the auditor was a rule (a deterministic, independent
  decision); a seeded entry that only the agent disputes stays, and the tenant's estimate
  carries the doubt;
- when the interval's upper bound is below the tenant's target, the tenant's hit policy is
  tightened one level (recorded with its reason; ``ticketflow cache policy --reset`` undoes it).
"""

from __future__ import annotations

from typing import Protocol

from pipeline.cache.audit import AuditState, AuditTag
from pipeline.cache.metrics import AuditMetrics
from pipeline.cache.policy import MAX_TIGHTENING
from pipeline.events import CacheAudit, CacheUpdate, TicketResolved
from pipeline.processing import Clock, Emit, Outcome, Output


class AuditLedger(Protocol):
    def record(self, tenant: str, audit_id: str, agreed: bool) -> AuditState: ...

    def set_level(self, tenant: str, level: int, reason: str, at_audited: int | None = None) -> None: ...


class CacheAuditor:
    name = "cache-audit"

    def __init__(self, ledger: AuditLedger, clock: Clock, target: float = 0.99,
                 metrics: AuditMetrics | None = None) -> None:
        self.ledger = ledger
        self.clock = clock
        self.target = target
        self.metrics = metrics

    def handle(self, resolved: TicketResolved, origin: str) -> Outcome:
        tag = AuditTag.parse(resolved.replay_tag)
        if tag is None:
            return Emit()  # a replay's answer: not ours
        if resolved.path == "escalated" or not resolved.resolution_key:
            return Emit(note="audit_inconclusive")
        agreed = resolved.resolution_key == tag.served_key
        state = self.ledger.record(resolved.tenant_id, resolved.ticket_id, agreed)
        now = self.clock.now_ms()
        if state.should_tighten(self.target, MAX_TIGHTENING):
            low, high = state.interval
            reason = (f"audit: precision {state.estimate:.3f} [{low:.3f}, {high:.3f}] over {state.audited} "
                      f"audited hits, upper bound below the target {self.target}")
            state = AuditState(state.audited, state.agreed, state.level + 1, state.audited)
            self.ledger.set_level(resolved.tenant_id, state.level, reason, state.audited)
        low, high = state.interval
        if self.metrics is not None:
            self.metrics.observe(resolved.tenant_id, agreed, state, self.target)
        record = CacheAudit(tenant_id=resolved.tenant_id, ticket_id=tag.ticket_id, served_key=tag.served_key,
                            audit_key=resolved.resolution_key, audit_path=resolved.path, agreed=agreed,
                            entry_id=tag.entry_id, audited=state.audited, agreed_total=state.agreed,
                            precision_estimate=round(state.estimate, 6), precision_low=round(low, 6),
                            precision_high=round(high, 6), policy_level=state.level, created_at=now)
        outputs = [Output("pipeline.metrics", resolved.tenant_id, record)]
        entry = self._entry_update(resolved, tag, agreed, now)
        if entry is not None:
            outputs.append(Output("cache.updates", resolved.tenant_id, entry))
        return Emit(tuple(outputs))

    def _entry_update(self, resolved: TicketResolved, tag: AuditTag, agreed: bool, now: int) -> CacheUpdate | None:
        if agreed:
            return CacheUpdate(tenant_id=resolved.tenant_id, op="confirm", created_at=now, entry_id=tag.entry_id,
                               source="audit")
        if _written_back(tag.entry_id) or resolved.path == "rule":
            return CacheUpdate(tenant_id=resolved.tenant_id, op="delete", created_at=now, entry_id=tag.entry_id)
        return None


def _written_back(entry_id: str) -> bool:
    """Seeds are ``seed:<file>:<line>``; entries written back from answers ``<ticket>:<tag>``."""
    return not entry_id.startswith("seed:")
