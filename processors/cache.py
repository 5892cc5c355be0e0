"""Cache stage: answer a ticket from the semantic cache, or pass it on with the decision.

Reads ``tickets.accepted``. The texts of a whole consumed batch are embedded together (one
micro-batch, on the embedder's thread) in ``prepare``; ``handle`` then emits per ticket:

- hit: a ``TicketResolved`` with path ``cache``, the cached answer, its resolution key and
  the similarity, and no LLM usage at all;
- miss: the ticket on ``tickets.uncached`` with the ``CacheDecision`` (why it missed, the
  nearest key and similarity) for the router.

Each embedding batch is a ``UsageRecord`` (kind ``embedding``) per tenant in it, on
``llm.usage`` with the first ticket's outputs: tokens (the embedding model's own tokenizer
count), the batch's latency, and a cost when the pricing table prices the model (the local
sentence-transformers model runs on the worker's CPU: no price, cost 0).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

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


class CacheLookup:
    name = "cache"

    def __init__(self, cache: SemanticCache, clock: Clock, pricing: PricingTable | None = None) -> None:
        self.cache = cache
        self.clock = clock
        self.pricing = pricing
        self._verdicts: dict[str, tuple[Verdict, Vectors]] = {}
        self._usage: dict[str, list[UsageRecord]] = {}  # first origin of a batch -> its embedding usage

    def prepare(self, batch: Sequence[tuple[TicketSubmitted, str]]) -> None:
        started = time.perf_counter()
        verdicts, vectors = self.cache.lookup_many_with_vectors([(t.tenant_id, cache_text(t)) for t, _ in batch])
        self._verdicts = {origin: (v, vectors[i]) for i, ((_, origin), v) in enumerate(zip(batch, verdicts,
                                                                                            strict=True))}
        if batch:
            self._usage = {batch[0][1]: self.embedding_usage([t for t, _ in batch], batch[0][1],
                                                             (time.perf_counter() - started) * 1000)}

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

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        outcome = self._handle(ticket, origin)
        usage = self._usage.pop(origin, [])
        if not usage or not isinstance(outcome, Emit):
            return outcome
        return Emit((*outcome.outputs, *(Output("llm.usage", u.tenant_id, u) for u in usage)), outcome.note)

    def _handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        prepared = self._verdicts.pop(origin, None)
        if prepared is None:
            started = time.perf_counter()
            [verdict], vectors = self.cache.lookup_many_with_vectors([(ticket.tenant_id, cache_text(ticket))])
            prepared = (verdict, vectors[0])
            self._usage[origin] = self.embedding_usage([ticket], origin, (time.perf_counter() - started) * 1000)
        verdict, vector = prepared
        now = self.clock.now_ms()
        if verdict.hit and verdict.answer is not None:
            created = ticket.created_at if ticket.created_at is not None else now
            resolved = TicketResolved(
                ticket_id=ticket.ticket_id, tenant_id=ticket.tenant_id, customer_id=ticket.customer_id,
                lane=ticket.lane, answer=verdict.answer, path="cache", resolution_key=verdict.resolution_key,
                cache_similarity=verdict.similarity, created_at=created, resolved_at=now,
                stage_latency_ms=stage_latencies(ticket, self.name, now), end_to_end_ms=float(max(0, now - created)),
                replay_tag=ticket.replay_tag, cache_text=cache_text(ticket),
            )
            return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))
        decision = CacheDecision(hit=False, reason=verdict.reason, similarity=verdict.similarity,
                                 resolution_key=verdict.resolution_key, neighbours=verdict.neighbours)
        # The embedding goes along, so that the router does not compute it again.
        passed = dataclasses.replace(ticket, cache_decision=decision,
                                     stage_times={**ticket.stage_times, self.name: now},
                                     embedding=vector.astype("<f4").tobytes(), embedding_model=self.cache.embedder.name)
        return Emit((Output("tickets.uncached", ticket.ticket_id, passed),))
