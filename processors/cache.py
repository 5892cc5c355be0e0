"""Cache stage: answer a ticket from the semantic cache, or pass it on with the decision.

Reads ``tickets.accepted``. The texts of a whole consumed batch are embedded together (one
micro-batch, on the embedder's thread) in ``prepare``; ``handle`` then emits per ticket:

- hit: a ``TicketResolved`` with path ``cache``, the cached answer, its resolution key and
  the similarity, and no LLM usage at all;
- miss: the ticket on ``tickets.uncached`` with the ``CacheDecision`` (why it missed, the
  nearest key and similarity) for the router.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pipeline.cache.embedder import Vectors
from pipeline.cache.policy import Verdict
from pipeline.cache.semantic_cache import SemanticCache
from pipeline.events import CacheDecision, TicketResolved, TicketSubmitted
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

    def __init__(self, cache: SemanticCache, clock: Clock) -> None:
        self.cache = cache
        self.clock = clock
        self._verdicts: dict[str, tuple[Verdict, Vectors]] = {}

    def prepare(self, batch: Sequence[tuple[TicketSubmitted, str]]) -> None:
        verdicts, vectors = self.cache.lookup_many_with_vectors([(t.tenant_id, cache_text(t)) for t, _ in batch])
        self._verdicts = {origin: (v, vectors[i]) for i, ((_, origin), v) in enumerate(zip(batch, verdicts,
                                                                                            strict=True))}

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        prepared = self._verdicts.pop(origin, None)
        if prepared is None:
            [verdict], vectors = self.cache.lookup_many_with_vectors([(ticket.tenant_id, cache_text(ticket))])
            prepared = (verdict, vectors[0])
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
