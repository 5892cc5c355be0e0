"""Accounting: usage and cost per ticket, tenant, workflow, step and model on ``pipeline.metrics``.

- on ``tickets.responses``: one ``CostSummary`` (scope ``ticket``) per resolved ticket, with
  its tokens, cost and LLM calls, whatever path answered it (a cache hit costs 0);
- on ``llm.usage``: every ``UsageRecord`` is added, once (Redis, by record id), to the
  per-minute aggregates of its tenant, workflow, step and model; after each consumed batch
  the running total of every aggregate it touched is published (the newest record of a
  scope, key and window holds its total, so readers keep the latest). The tenant's records
  carry its daily budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.adapters.redis_costs import Aggregate, RedisCostWindows
from pipeline.events import CostSummary, TicketResolved, UsageRecord
from pipeline.processing import Emit, Outcome, Output


class TicketCosts:
    name = "accounting"

    def handle(self, resolved: TicketResolved, origin: str) -> Outcome:
        summary = CostSummary(
            scope="ticket", scope_key=resolved.ticket_id, tenant_id=resolved.tenant_id,
            window_start=resolved.created_at, window_end=resolved.resolved_at, tickets=1,
            llm_calls=len(resolved.models), tokens_in=resolved.tokens_in, tokens_out=resolved.tokens_out,
            tokens_cached=resolved.tokens_cached, cost_micros=resolved.cost_micros, path=resolved.path,
            end_to_end_ms=resolved.end_to_end_ms, ttft_ms=resolved.ttft_ms, replay_tag=resolved.replay_tag)
        return Emit((Output("pipeline.metrics", resolved.tenant_id, summary),))


class UsageAggregator:
    name = "accounting-usage"

    def __init__(self, windows: RedisCostWindows, tenant_budget: Callable[[str], int]) -> None:
        self.windows = windows
        self.tenant_budget = tenant_budget

    def handle_batch(self, batch: Sequence[tuple[UsageRecord, str]]) -> list[Outcome]:
        """Every record added (once, by id); the totals of the aggregates the batch touched go
        out with its last record."""
        touched: dict[Aggregate, None] = {}
        for record, _ in batch:
            for aggregate in self.windows.apply(record):
                touched[aggregate] = None
        published = Emit(tuple(Output("pipeline.metrics", a.tenant, self.summary(a)) for a in touched))
        outcomes: list[Outcome] = [Emit() for _ in batch[:-1]]
        return [*outcomes, published] if batch else []

    def handle(self, record: UsageRecord, origin: str) -> Outcome:
        """One record (a batch of one)."""
        return self.handle_batch([(record, origin)])[0]

    def summary(self, aggregate: Aggregate) -> CostSummary:
        totals = self.windows.read(aggregate)
        return CostSummary(
            scope=aggregate.scope, scope_key=aggregate.key, tenant_id=aggregate.tenant,  # type: ignore[arg-type]
            window_start=aggregate.window_start, window_end=aggregate.window_start + self.windows.window_ms,
            llm_calls=totals.get("llm_calls", 0), tokens_in=totals.get("tokens_in", 0),
            tokens_out=totals.get("tokens_out", 0), tokens_cached=totals.get("tokens_cached", 0),
            cost_micros=totals.get("cost_micros", 0),
            budget_micros=self.tenant_budget(aggregate.tenant) if aggregate.scope == "tenant" else None,
            by_model_micros={k.removeprefix("model:"): v for k, v in totals.items() if k.startswith("model:")})
