"""Cache stage: answer a ticket from the semantic cache, or pass it on with the decision.

Reads ``tickets.accepted``. The texts of a whole consumed batch are embedded together (one
micro-batch, on the embedder's thread) in ``prepare``; ``handle`` then emits per ticket:

- hit: a ``TicketResolved`` with path ``cache``, the cached answer, its resolution key and
  the similarity, and no LLM usage at all;
- miss: the ticket on ``tickets.uncached`` with the ``CacheDecision`` (why it missed, the
  nearest key and similarity) for the router.

A share of hits is audited (:mod:`pipeline.cache.audit`): the ticket goes on to the router a
second time as an audit ticket on the batch lane, tagged with what the cache served; its
answer goes to ``tickets.replay.responses``, never to the customer.

Each embedding batch is a ``UsageRecord`` (kind ``embedding``) per tenant in it, on
``llm.usage`` with the first ticket's outputs: tokens (the embedding model's own tokenizer
count), the batch's latency, and a cost when the pricing table prices the model (the local
sentence-transformers model runs on the worker's CPU: no price, cost 0).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.cache.audit import AuditState, AuditTag, audit_share, audit_ticket_id, sampled
from pipeline.cache.embedder import Vectors
from pipeline.cache.policy import Verdict
from pipeline.cache.semantic_cache import SemanticCache
from pipeline.events import CacheDecision, TicketResolved, TicketSubmitted, UsageRecord
from pipeline.llm.pricing import PricingTable
from pipeline.llm.tokens import count_tokens
from pipeline.pii import redact
from pipeline.processing import Clock, Emit, Outcome, Output
from processors.escalation import stage_latencies


def cache_text(ticket: TicketSubmitted) -> str:
    """The PII-redacted text the cache keys on (intake sets it; older records fall back)."""
    if ticket.cache_text is not None:
        return ticket.cache_text
    return redact(f"{ticket.subject}\n{ticket.body}" if ticket.subject else ticket.body)


class AuditStates(Protocol):
    def state(self, tenant: str) -> AuditState: ...


@dataclass(frozen=True)
class AuditSampling:
    """Which hits to audit: ``base`` share of a tenant's hits, more while its interval is
    wider than ``max_width`` (TICKETFLOW_CACHE_AUDIT_SHARE, TICKETFLOW_CACHE_AUDIT_MAX_WIDTH)."""

    states: AuditStates
    base: float = 0.05
    max_width: float = 0.05

    def picks(self, tenant: str, ticket_id: str) -> bool:
        state = self.states.state(tenant)
        return sampled(ticket_id, audit_share(self.base, state.agreed, state.audited, self.max_width))


class CacheLookup:
    name = "cache"

    def __init__(self, cache: SemanticCache, clock: Clock, pricing: PricingTable | None = None,
                 audit: AuditSampling | None = None) -> None:
        self.cache = cache
        self.clock = clock
        self.pricing = pricing
        self.audit = audit

    def handle_batch(self, batch: Sequence[tuple[TicketSubmitted, str]]) -> list[Outcome]:
        """One embedding batch and one index search for the whole batch; the batch's embedding
        usage (per tenant) goes out with its first record's outputs."""
        if not batch:
            return []
        started = time.perf_counter()
        verdicts, vectors = self.cache.lookup_many_with_vectors([(t.tenant_id, cache_text(t)) for t, _ in batch])
        usage = self.embedding_usage([t for t, _ in batch], batch[0][1], (time.perf_counter() - started) * 1000)
        outcomes: list[Outcome] = [self._decide(ticket, verdict, vectors[i])
                                   for i, ((ticket, _), verdict) in enumerate(zip(batch, verdicts, strict=True))]
        first = outcomes[0]
        if isinstance(first, Emit):
            outcomes[0] = Emit((*first.outputs, *(Output("llm.usage", u.tenant_id, u) for u in usage)), first.note)
        return outcomes

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        """One ticket (a batch of one)."""
        return self.handle_batch([(ticket, origin)])[0]

    def embedding_usage(self, tickets: Sequence[TicketSubmitted], origin: str, latency_ms: float) -> list[UsageRecord]:
        model = self.cache.embedder.name
        tokens: dict[str, int] = {}
        for ticket in tickets:
            tokens[ticket.tenant_id] = tokens.get(ticket.tenant_id, 0) + count_tokens(cache_text(ticket))
        priced = self.pricing is not None and model in self.pricing.prices
        now = self.clock.now_ms()
        return [UsageRecord(record_id=f"embedding:{origin}:{tenant}", tenant_id=tenant, workflow="cache",
                            step=self.name, kind="embedding", provider="local", model=model, occurred_at=now,
                            tokens_in=n, latency_ms=round(latency_ms, 3),
                            cost_micros=self.pricing.cost_micros(model, n, 0) if priced and self.pricing else 0)
                for tenant, n in sorted(tokens.items())]

    def _decide(self, ticket: TicketSubmitted, verdict: Verdict, vector: Vectors) -> Outcome:
        now = self.clock.now_ms()
        if verdict.hit and verdict.answer is not None:
            created = ticket.created_at if ticket.created_at is not None else now
            resolved = TicketResolved(
                ticket_id=ticket.ticket_id, tenant_id=ticket.tenant_id, customer_id=ticket.customer_id,
                lane=ticket.lane, answer=verdict.answer, path="cache", resolution_key=verdict.resolution_key,
                cache_similarity=verdict.similarity, created_at=created, resolved_at=now,
                stage_latency_ms=stage_latencies(ticket, self.name, now), end_to_end_ms=float(max(0, now - created)),
                replay_tag=ticket.replay_tag, cache_text=cache_text(ticket), cache_entry_id=verdict.entry_id,
            )
            outputs = [Output("tickets.responses", ticket.ticket_id, resolved)]
            if (self.audit is not None and ticket.replay_tag is None and verdict.resolution_key
                    and verdict.entry_id and self.audit.picks(ticket.tenant_id, ticket.ticket_id)):
                outputs.append(self._audit_request(ticket, verdict, vector, now))
            return Emit(tuple(outputs))
        return self._pass_on(ticket, verdict, vector, now)

    def _audit_request(self, ticket: TicketSubmitted, verdict: Verdict, vector: Vectors, now: int) -> Output:
        """The hit's ticket again, for the router (and maybe the agent) on the batch lane."""
        assert verdict.resolution_key is not None and verdict.entry_id is not None
        tag = AuditTag(verdict.resolution_key, verdict.entry_id, ticket.ticket_id)
        audit = dataclasses.replace(ticket, ticket_id=audit_ticket_id(ticket.ticket_id), lane="batch",
                                    replay_tag=tag.render(), cache_text=cache_text(ticket))
        passed = self._pass_on(audit, dataclasses.replace(verdict, hit=False, reason="audit"), vector, now)
        return passed.outputs[0]

    def _pass_on(self, ticket: TicketSubmitted, verdict: Verdict, vector: Vectors, now: int) -> Emit:
        decision = CacheDecision(hit=False, reason=verdict.reason, similarity=verdict.similarity,
                                 resolution_key=verdict.resolution_key, neighbours=verdict.neighbours)
        # The embedding goes along, so that the router does not compute it again.
        passed = dataclasses.replace(ticket, cache_decision=decision,
                                     stage_times={**ticket.stage_times, self.name: now},
                                     embedding=vector.astype("<f4").tobytes(), embedding_model=self.cache.embedder.name)
        return Emit((Output("tickets.uncached", ticket.ticket_id, passed),))
