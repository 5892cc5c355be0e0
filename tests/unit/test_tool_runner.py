"""The tool runner's order of checks, with counting tools and an in-memory cache.

The allowlist and argument validation come before anything runs; then the cache, the
breaker, the timeout and the retries. Each test counts how often the tool itself ran.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from pipeline.adapters.sql_bank import NotFound, StoreUnavailable
from pipeline.resilience import CircuitBreaker, RetrySchedule
from pipeline.tools.banking import CARD_STATUS, FREEZE_CARD, REFUND
from pipeline.tools.registry import ToolContext, ToolRegistry, ToolSpec, arguments_digest
from pipeline.tools.runner import ToolRunner

ROUTES = {"lookup": frozenset({"card_status"}), "lost_card": frozenset({"card_status", "freeze_card"}),
          "refund_route": frozenset({"card_status"})}


class Routes:
    def allowed_tools(self, route: str) -> frozenset[str] | None:
        return ROUTES.get(route)


class MemoryCache:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], int] = {}

    def _key(self, tenant: str, spec: ToolSpec, arguments: Mapping[str, Any]) -> str:
        version = self.versions.get((tenant, spec.data_source or ""), 0)
        return f"{tenant}:{spec.name}:{version}:{arguments_digest(arguments)}"

    def get(self, tenant: str, spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any] | None:
        return self.data.get(self._key(tenant, spec, arguments))

    def put(self, tenant: str, spec: ToolSpec, arguments: dict[str, Any], result: dict[str, Any]) -> None:
        self.data[self._key(tenant, spec, arguments)] = result

    def invalidate(self, tenant: str, source: str) -> int:
        self.versions[(tenant, source)] = self.versions.get((tenant, source), 0) + 1
        return self.versions[(tenant, source)]


class Counting:
    """A tool that counts its calls and behaves as told: ok, raise, or hang."""

    def __init__(self, behaviour: str = "ok") -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.behaviour = behaviour
        self.release = threading.Event()

    def __call__(self, ctx: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append((ctx.idempotency_key, dict(args)))
        if self.behaviour == "down":
            raise StoreUnavailable("connection refused")
        if self.behaviour == "missing":
            raise NotFound("no such card")
        if self.behaviour == "hang":
            self.release.wait(5)
        return {"status": "active", "n": len(self.calls)}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def runner_with(tools: dict[str, Counting], cache: MemoryCache | None = None, clock: Clock | None = None,
                attempts: int = 3) -> ToolRunner:
    registry = ToolRegistry()
    specs = {"card_status": ToolSpec(CARD_STATUS.name, "", CARD_STATUS.parameters, data_source="cards",
                                     timeout_s=0.2),
             "freeze_card": FREEZE_CARD, "refund": REFUND}
    for name, function in tools.items():
        registry.register(specs[name], function)
    sleeps: list[float] = []
    return ToolRunner(registry, Routes(), cache, RetrySchedule(max_attempts=attempts, base_s=0.01, cap_s=0.02),
                      lambda tool: CircuitBreaker(3, 10.0, clock or Clock()), sleep=sleeps.append)


CARD = '{"customer_id": "C-00001"}'


def test_a_tool_outside_the_routes_allowlist_never_runs() -> None:
    refund, card = Counting(), Counting()
    runner = runner_with({"refund": refund, "card_status": card})
    out = runner.run("acme", "refund_route", "refund",
                     '{"customer_id": "C-00001", "transfer_id": "TR-00001000", "amount": "5000.00 EUR"}', "k1")
    assert (out.ok, out.error_class, out.reached_tool) == (False, "ToolNotAllowed", False)
    assert "may not call 'refund'" in (out.error_message or "")
    assert runner.run("acme", "made_up_route", "card_status", CARD, "k2").error_class == "ToolNotAllowed"
    assert refund.calls == [] and card.calls == []


@pytest.mark.parametrize("arguments", [
    '{"customer_id": "C-00001", "card_last4": "12ab"}',  # not four digits
    '{"customer_id": "C-00001"}',  # missing card_last4
    '{"customer_id": "C-00001", "card_last4": "1234", "all_cards": true}',  # an extra argument
    '{"customer_id": "C-00001\' OR 1=1 --", "card_last4": "1234"}',  # SQL in a value
    'freeze everything',  # not JSON
])
def test_a_side_effecting_tool_never_runs_on_arguments_that_failed_validation(arguments: str) -> None:
    freeze = Counting()
    out = runner_with({"freeze_card": freeze}).run("acme", "lost_card", "freeze_card", arguments, "k")
    assert (out.ok, out.error_class) == (False, "ToolArgumentError")
    assert freeze.calls == []


def test_side_effect_runs_with_its_idempotency_key_and_invalidates_the_data_it_changed() -> None:
    freeze, card, cache = Counting(), Counting(), MemoryCache()
    runner = runner_with({"freeze_card": freeze, "card_status": card}, cache)
    assert runner.run("acme", "lost_card", "card_status", CARD, "a").result == {"status": "active", "n": 1}
    out = runner.run("acme", "lost_card", "freeze_card", '{"customer_id": "C-00001", "card_last4": "1234"}',
                     "t-9:step-2:freeze_card")
    assert out.ok and out.changed_data == "cards" and not out.cached
    assert freeze.calls == [("t-9:step-2:freeze_card", {"customer_id": "C-00001", "card_last4": "1234"})]
    again = runner.run("acme", "lost_card", "card_status", CARD, "b")
    assert not again.cached and len(card.calls) == 2  # the freeze dropped the cached status


def test_a_cached_result_avoids_the_call_per_tenant() -> None:
    card, cache = Counting(), MemoryCache()
    runner = runner_with({"card_status": card}, cache)
    first = runner.run("acme", "lookup", "card_status", CARD, "a")
    second = runner.run("acme", "lookup", "card_status", '{ "customer_id" : "C-00001" }', "b")
    assert (first.cached, second.cached, second.result) == (False, True, first.result)
    assert len(card.calls) == 1
    assert not runner.run("globex", "lookup", "card_status", CARD, "c").cached
    cache.invalidate("acme", "cards")
    assert not runner.run("acme", "lookup", "card_status", CARD, "d").cached
    assert len(card.calls) == 3


def test_failures_are_retried_then_trip_the_breaker_which_fails_fast_and_recovers() -> None:
    card, clock = Counting("down"), Clock()
    runner = runner_with({"card_status": card}, clock=clock, attempts=2)
    first = runner.run("acme", "lookup", "card_status", CARD, "a")
    assert (first.ok, first.error_class, first.attempts) == (False, "StoreUnavailable", 2)
    second = runner.run("acme", "lookup", "card_status", CARD, "b")  # third failure opens it
    assert second.error_class == "CircuitOpen" and len(card.calls) == 3
    assert runner.breaker("card_status").state == "open"
    third = runner.run("acme", "lookup", "card_status", CARD, "c")
    assert third.error_class == "CircuitOpen" and not third.reached_tool and len(card.calls) == 3
    clock.now = 11.0  # after the cool-down one probe goes out; the tool works again
    card.behaviour = "ok"
    assert runner.run("acme", "lookup", "card_status", CARD, "d").ok
    assert runner.breaker("card_status").state == "closed"


def test_a_hung_tool_costs_its_timeout_and_counts_as_a_failure() -> None:
    card = Counting("hang")
    runner = runner_with({"card_status": card}, attempts=2)
    out = runner.run("acme", "lookup", "card_status", CARD, "a")
    card.release.set()
    assert (out.ok, out.error_class, out.attempts) == (False, "ToolTimeout", 2)
    assert "did not answer within 0.2 s" in (out.error_message or "")
    assert runner.breaker("card_status").failures == 2


def test_an_answer_about_the_data_is_not_retried_and_keeps_the_breaker_closed() -> None:
    card = Counting("missing")
    runner = runner_with({"card_status": card})
    out = runner.run("acme", "lookup", "card_status", CARD, "a")
    assert (out.ok, out.error_class, out.attempts) == (False, "NotFound", 1)
    assert runner.breaker("card_status").failures == 0


def test_a_replay_checks_a_side_effect_and_records_it_as_would_have_run_without_running_it() -> None:
    freeze, card = Counting(), Counting()
    runner = runner_with({"freeze_card": freeze, "card_status": card})
    out = runner.run("acme", "lost_card", "freeze_card", '{"customer_id": "C-00001", "card_last4": "1234"}',
                     "t-9@backfill:2:freeze_card", effects=False)
    assert out.ok and out.would_have_run and out.changed_data is None and not out.reached_tool
    assert out.result == {"status": "would_have_run", "tool": "freeze_card",
                          "arguments": {"customer_id": "C-00001", "card_last4": "1234"}}
    assert freeze.calls == []
    # still checked like any call: bad arguments and tools outside the allowlist are refused
    bad = runner.run("acme", "lost_card", "freeze_card", '{"customer_id": "C-00001"}', "k", effects=False)
    assert (bad.ok, bad.error_class, bad.would_have_run) == (False, "ToolArgumentError", False)
    assert runner.run("acme", "lookup", "freeze_card", CARD, "k", effects=False).error_class == "ToolNotAllowed"
    # a lookup changes nothing: a replay runs it
    assert runner.run("acme", "lost_card", "card_status", CARD, "k", effects=False).result == \
        {"status": "active", "n": 1}


def test_the_tool_processor_runs_no_side_effect_of_a_replayed_ticket() -> None:
    import json

    from pipeline.events import AgentStep, Message, ToolCall, ToolResult, UsageRecord
    from pipeline.processing import Emit
    from pipeline.serde import pack
    from processors.tools import ToolProcessor
    from tests.fakes import FixedClock

    freeze = Counting()
    processor = ToolProcessor(runner_with({"freeze_card": freeze}), FixedClock())

    def call(tag: str | None) -> ToolCall:
        step = AgentStep(step_id="t-1:1", ticket_id="t-1", tenant_id="acme", workflow="lost_card", step=1,
                         ticket=b"", transcript=[Message("user", "I lost my card")], replay_tag=tag)
        return ToolCall(call_id=f"t-1{'@' + tag if tag else ''}:1:freeze_card", ticket_id="t-1", tenant_id="acme",
                        tool="freeze_card", arguments='{"customer_id": "C-00001", "card_last4": "1234"}',
                        route="lost_card", reply_to="agent", requested_at=1, step=pack(step))

    replayed = processor.handle(call("backfill-1"), "tools.calls/0/1")
    assert isinstance(replayed, Emit) and freeze.calls == []
    result = next(o.event for o in replayed.outputs if isinstance(o.event, ToolResult))
    usage = next(o.event for o in replayed.outputs if isinstance(o.event, UsageRecord))
    assert result.ok and json.loads(result.result or "{}")["status"] == "would_have_run"
    assert (usage.outcome, usage.provider) == ("would_have_run", "replay")
    assert not any(o.topic == "tools.invalidations" for o in replayed.outputs)  # nothing changed
    live = processor.handle(call(None), "tools.calls/0/2")
    assert isinstance(live, Emit) and len(freeze.calls) == 1  # the customer's own ticket: applied
    assert any(o.topic == "tools.invalidations" for o in live.outputs)
