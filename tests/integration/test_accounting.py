"""Accounting against real Redis: usage counted once per record, summaries per scope."""

from __future__ import annotations

import uuid

from pipeline.adapters.redis_costs import RedisCostWindows
from pipeline.events import CostSummary, TicketResolved, UsageRecord
from pipeline.processing import Emit
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from processors.accounting import TicketCosts, UsageAggregator

T0 = 1_800_000_000_000  # a window boundary (a multiple of 60 s)


def usage(n: int, model: str = "gpt-4.1-mini", cost: int = 700, step: str = "t-1:0", outcome: str = "ok",
          at: int = T0 + 1_000) -> UsageRecord:
    return UsageRecord(record_id=f"{step}:cheap:{n}", tenant_id="acme", workflow="fallback_agent", step=step,
                       kind="llm", provider="simulated", model=model, occurred_at=at, ticket_id="t-1",
                       tokens_in=1200, tokens_out=90, tokens_cached=1000, cost_micros=cost, outcome=outcome)


def summaries(outcome: object) -> dict[tuple[str, str], CostSummary]:
    assert isinstance(outcome, Emit)
    found: dict[tuple[str, str], CostSummary] = {}
    for output in outcome.outputs:
        assert output.topic == "pipeline.metrics" and isinstance(output.event, CostSummary)
        found[(output.event.scope, output.event.scope_key)] = output.event
    return found


def test_usage_is_counted_once_and_summed_per_scope(live_services: Settings) -> None:
    windows = RedisCostWindows(redis_client(live_services), f"test-{uuid.uuid4().hex[:8]}:")
    aggregator = UsageAggregator(windows, lambda tenant: 5_000_000)
    batch = [(usage(1), "o1"), (usage(2, model="gpt-4.1", cost=2500), "o2"),
             (usage(1), "o3"),  # the same record again (a replayed batch): not counted twice
             (usage(3, cost=0, outcome="RateLimited"), "o4")]
    outcomes = aggregator.handle_batch(batch)
    assert all(isinstance(o, Emit) and not o.outputs for o in outcomes[:-1])  # published once, at the end
    found = summaries(outcomes[-1])
    tenant = found[("tenant", "acme")]
    assert (tenant.llm_calls, tenant.cost_micros, tenant.tokens_in, tenant.budget_micros) == (2, 3200, 3600, 5_000_000)
    assert tenant.by_model_micros == {"gpt-4.1-mini": 700, "gpt-4.1": 2500}
    assert (tenant.window_start, tenant.window_end) == (T0, T0 + 60_000)
    assert found[("model", "llm:gpt-4.1")].cost_micros == 2500
    assert found[("step", "fallback_agent:0")].llm_calls == 2
    assert found[("workflow", "fallback_agent")].budget_micros is None


def test_every_resolved_ticket_gets_its_cost_record() -> None:
    resolved = TicketResolved(ticket_id="t-9", tenant_id="acme", answer="a", path="agent", created_at=1,
                              resolved_at=900, models=["gpt-4.1-mini", "gpt-4.1"], tokens_in=2400, tokens_out=200,
                              tokens_cached=2000, cost_micros=3300)
    [summary] = summaries(TicketCosts().handle(resolved, "o")).values()
    assert (summary.scope, summary.scope_key, summary.llm_calls, summary.cost_micros) == ("ticket", "t-9", 2, 3300)
    cached = TicketResolved(ticket_id="t-10", tenant_id="acme", answer="a", path="cache", created_at=1,
                            resolved_at=2)
    [free] = summaries(TicketCosts().handle(cached, "o")).values()
    assert (free.llm_calls, free.cost_micros) == (0, 0)
