"""The agent's Redis ports for real: budgets under concurrency, the shared rate limiter, and
recorded step results."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.adapters.redis_budget import RedisBudgets
from pipeline.adapters.redis_rate_limit import RedisRateLimiter
from pipeline.adapters.redis_step_results import RedisStepResults
from pipeline.agent.aio import LoopThread
from pipeline.agent.machine import CascadePolicy
from pipeline.agent.prompt import build_request, system_prompt
from pipeline.agent.runner import StepRunner
from pipeline.events import AgentStep, Message
from pipeline.llm.pricing import PricingTable
from pipeline.llm.simulated import MemoryBilling, SimulatedProvider
from pipeline.llm.types import LLMResponse, RequestedToolCall
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings

INTENTS = ["card_arrival", "declined_card_payment", "exchange_rate"]


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


def test_200_concurrent_tickets_of_a_tenant_overspend_by_at_most_one_reservation(live_services: Settings) -> None:
    client = redis_client(live_services)
    budgets = RedisBudgets(client, prefix())
    billing = MemoryBilling()
    provider = SimulatedProvider(seed=2, intents=INTENTS, billing=billing, time_scale=0.01)
    pricing = PricingTable.load(None)
    runner = StepRunner(provider, {"cheap": "gpt-4.1-mini", "strong": "gpt-4.1"}, None, pricing,
                        RedisStepResults(client, prefix()), budgets, None, lambda allowed: (),
                        system_prompt(INTENTS), INTENTS, {"default": 10**9}, lambda tenant: daily,
                        cascade=CascadePolicy(min_confidence={"cheap": 0.0}))
    steps = [AgentStep(step_id=f"b-{i}:0", ticket_id=f"b-{i}", tenant_id="thrifty", workflow="w", step=0,
                       ticket=b"", candidates=["exchange_rate"],
                       transcript=[Message("user", f"What rate do you use? ({i})")])
             for i in range(200)]
    one_call = runner.worst_case_micros("gpt-4.1-mini", build_request(steps[0], "gpt-4.1-mini", runner.system, (),
                                                                      "x", 400))
    daily = 20 * one_call  # covers about 20 tickets at their worst case
    loop = LoopThread()
    try:
        runs = loop.run_all([runner.run(s) for s in steps])
    finally:
        loop.close()
    answered = [r for r in runs if r.action is not None]
    refused = [r for r in runs if r.escalation.startswith("budget")]
    spent = sum(c.cost_micros for r in runs for c in r.calls)
    assert len(answered) + len(refused) == 200
    assert 20 <= len(answered) < 60, len(answered)  # actual costs are below the worst case: a few more fit
    assert budgets.spent("thrifty") == spent  # reservations were all settled to the actual cost
    assert spent <= daily + one_call, (spent, daily)
    assert billing.total() == len(answered)  # refused tickets never reached the provider


def test_the_rate_limit_is_shared_and_holds_across_clients(live_services: Settings) -> None:
    key = prefix()
    limiters = [RedisRateLimiter(redis_client(live_services), key, rate_per_s=50, burst=5) for _ in range(3)]
    started = time.monotonic()
    granted = 0
    while time.monotonic() - started < 1.0:
        for limiter in limiters:
            if limiter.acquire("sim", "m") == 0:
                granted += 1
    assert 40 <= granted <= 5 + 50 * (time.monotonic() - started) + 1, granted
    assert limiters[0].acquire("sim", "other-model") == 0  # per model


def test_a_step_result_is_recorded_once(live_services: Settings) -> None:
    store = RedisStepResults(redis_client(live_services), prefix())
    first = LLMResponse(model="m", provider="p", text="", tool_calls=(RequestedToolCall("c", "t", "{}"),),
                        tokens_in=3, tokens_out=2, extra={"requested_model": "m"})
    other = LLMResponse(model="m", provider="p", text="another answer")
    assert store.put("t-1:0:cheap", first) == first
    assert store.put("t-1:0:cheap", other) == first  # the first recorded result wins
    assert store.get("t-1:0:cheap") == first and store.get("t-2:0:cheap") is None
    # the lease: one caller at a time per step and tier, renewable by its owner, released after
    assert store.claim("t-3:0:cheap", "a", 5) and not store.claim("t-3:0:cheap", "b", 5)
    store.renew("t-3:0:cheap", "b", 60)  # not b's: no effect
    assert 0 < int(store.client.pttl(store._key("t-3:0:cheap") + ":lease")) <= 5000
    store.release("t-3:0:cheap")
    assert store.claim("t-3:0:cheap", "b", 5)


def test_a_call_reserved_before_midnight_settles_on_its_own_day(live_services: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.adapters.redis_budget as budget_module

    budgets = RedisBudgets(redis_client(live_services), prefix())
    monkeypatch.setattr(budget_module, "_today", lambda: "20261203")
    assert budgets.reserve("night", "t-1", "t-1:0:cheap", 5_000, 10**9, 10**9).granted
    monkeypatch.setattr(budget_module, "_today", lambda: "20261204")
    assert budgets.settle("night", "t-1", "t-1:0:cheap", 1_200)
    assert budgets.spent("night", day="20261203") == 1_200  # the reservation's day, settled to the actual
    assert budgets.spent("night", day="20261204") == 0  # the new day owes nothing (it went negative before)
    assert not budgets.settle("night", "t-1", "t-1:0:cheap", 1_200)  # once


def test_a_replays_scope_caps_its_spend_and_settles_like_the_tenants_budget(live_services: Settings) -> None:
    budgets = RedisBudgets(redis_client(live_services), prefix())
    budgets.set_cap("backfill", 1000)
    assert budgets.reserve("acme", "t-1@backfill", "r1", 600, 10**9, 10**9, scope="backfill").granted
    refused = budgets.reserve("acme", "t-2@backfill", "r2", 600, 10**9, 10**9, scope="backfill")
    assert (refused.granted, refused.reason) == (False, "scope_budget")
    assert budgets.scope_spent("backfill") == 600 and budgets.spent("acme") == 600
    assert budgets.settle("acme", "t-1@backfill", "r1", 250)  # the actual cost replaces the reservation
    assert budgets.scope_spent("backfill") == 250 and budgets.spent("acme") == 250
    assert budgets.reserve("acme", "t-2@backfill", "r2", 600, 10**9, 10**9, scope="backfill").granted
    assert budgets.scope_spent("backfill") == 850
    # without a cap a scope only counts; an unscoped reservation leaves every scope alone
    assert budgets.reserve("acme", "t-3@other", "r3", 5000, 10**9, 10**9, scope="other").granted
    assert budgets.reserve("acme", "t-4", "r4", 5000, 10**9, 10**9).granted
    assert budgets.scope_spent("other") == 5000 and budgets.scope_spent("backfill") == 850
