"""Tool processor: run each ``ToolCall`` and publish its ``ToolResult`` and a usage record.

Reads ``tools.calls``. The :class:`~pipeline.tools.runner.ToolRunner` refuses calls outside
the route's allowlist and arguments that fail the tool's schema, serves deterministic
results from the Redis cache, and runs the rest under a timeout, retries and a breaker.
Every call yields exactly one result (ok or the error class and message) and one
``UsageRecord`` (kind ``tool``), in the same transaction as the input's offset; a side
effect that was applied also yields a ``ToolInvalidation`` for its data source. While the
tools' database is down (its health probe fails) a call is not answered with an error: the
runtime waits for the database and runs the call again.

A crash between running a side-effecting tool and the commit runs the call again on
restart: the tool finds its idempotency key (the call id) and does not apply it twice.

A replayed ticket (``ticketflow replay``) never changes anything: its side-effecting calls
are checked as usual and then not run, answered ``{"status": "would_have_run", ...}`` and
recorded (usage outcome ``would_have_run``); its lookups run (they change nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pipeline.events import AgentStep, TicketSubmitted, ToolCall, ToolInvalidation, ToolResult, UsageRecord
from pipeline.processing import Clock, Emit, Failure, Outcome, Output
from pipeline.replay.tags import is_replay
from pipeline.serde import unpack
from pipeline.tools.metrics import ToolMetrics
from pipeline.tools.runner import WOULD_HAVE_RUN, ToolRunner

TOOL_PROVIDER = "tools"
REPLAY_PROVIDER = "replay"
CACHE_PROVIDER = "tool-cache"
# Failures that may come from the tools' database being down (rather than from the tool).
WAITABLE = frozenset({"StoreUnavailable", "CircuitOpen", "ToolTimeout"})


class ToolProcessor:
    name = "tools"

    def __init__(self, runner: ToolRunner, clock: Clock, metrics: ToolMetrics | None = None,
                 dependency_down: Callable[[str], bool] | None = None, dependency: str = "sql") -> None:
        self.runner = runner
        self.clock = clock
        self.metrics = metrics
        self.dependency_down = dependency_down or (lambda name: False)
        self.dependency = dependency  # where the tools' data lives

    def handle(self, call: ToolCall, origin: str) -> Outcome:
        outcome = self.runner.run(call.tenant_id, call.route, call.tool, call.arguments, call.call_id,
                                  effects=not self._replayed_effect(call))
        if not outcome.ok and outcome.error_class in WAITABLE and self.dependency_down(self.dependency):
            # The database is down, not the tool: the runtime waits for it, and the call runs
            # again once it answers (with fresh breakers: they opened on the outage, not on
            # the tool). A failing tool with its database up still answers with the error.
            self.runner.breakers.clear()
            return Failure("DependencyDown", f"{call.tool}: {outcome.error_message}", retryable=True,
                           dependency=self.dependency)
        if self.metrics is not None:
            self.metrics.observe(call.tool, outcome, self.runner.breaker(call.tool).state)
        now = self.clock.now_ms()
        result = ToolResult(
            call_id=call.call_id, ticket_id=call.ticket_id, tenant_id=call.tenant_id, tool=call.tool,
            ok=outcome.ok, reply_to=call.reply_to, completed_at=now,
            result=json.dumps(outcome.result, sort_keys=True) if outcome.result is not None else None,
            error_class=outcome.error_class, error_message=outcome.error_message, cached=outcome.cached,
            latency_ms=round(outcome.latency_ms, 3), route=call.route, attempts=outcome.attempts, step=call.step)
        usage = UsageRecord(
            record_id=f"{call.call_id}:tool", ticket_id=call.ticket_id, tenant_id=call.tenant_id,
            workflow=call.route, step=call.call_id, kind="tool",
            provider=REPLAY_PROVIDER if outcome.would_have_run else CACHE_PROVIDER if outcome.cached else TOOL_PROVIDER,
            model=call.tool, occurred_at=now, latency_ms=round(outcome.latency_ms, 3),
            outcome=WOULD_HAVE_RUN if outcome.would_have_run else "ok" if outcome.ok
            else (outcome.error_class or "error"),
            attempt=max(1, outcome.attempts))
        outputs = [Output("tools.results", call.ticket_id, result), Output("llm.usage", call.tenant_id, usage)]
        if outcome.changed_data is not None:
            outputs.append(Output("tools.invalidations", call.tenant_id, ToolInvalidation(
                tenant_id=call.tenant_id, data_source=outcome.changed_data, created_at=now,
                reason=f"{call.tool} {call.call_id}")))
        return Emit(tuple(outputs))


    def _replayed_effect(self, call: ToolCall) -> bool:
        """A side-effecting call of a replayed ticket (its state says so)."""
        registry = self.runner.registry
        if call.step is None or call.tool not in registry.names() or not registry.spec(call.tool).side_effecting:
            return False
        tag = (unpack(call.step, AgentStep).replay_tag if call.reply_to == "agent"
               else unpack(call.step, TicketSubmitted).replay_tag)
        return is_replay(tag)


class ToolCacheInvalidator:
    """Reads ``tools.invalidations``: drops the tenant's cached results of that data source."""

    name = "tool-invalidator"

    def __init__(self, invalidate: Callable[[str, str], int]) -> None:
        self._invalidate = invalidate

    def handle(self, event: ToolInvalidation, origin: str) -> Outcome:
        self._invalidate(event.tenant_id, event.data_source)
        return Emit()
