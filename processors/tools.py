"""Tool processor: run each ``ToolCall`` and publish its ``ToolResult`` and a usage record.

Reads ``tools.calls``. The :class:`~pipeline.tools.runner.ToolRunner` refuses calls outside
the route's allowlist and arguments that fail the tool's schema, serves deterministic
results from the Redis cache, and runs the rest under a timeout, retries and a breaker.
Every call yields exactly one result (ok or the error class and message) and one
``UsageRecord`` (kind ``tool``), in the same transaction as the input's offset; a side
effect that was applied also yields a ``ToolInvalidation`` for its data source.

A crash between running a side-effecting tool and the commit runs the call again on
restart: the tool finds its idempotency key (the call id) and does not apply it twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pipeline.events import ToolCall, ToolInvalidation, ToolResult, UsageRecord
from pipeline.processing import Clock, Emit, Outcome, Output
from pipeline.tools.metrics import ToolMetrics
from pipeline.tools.runner import ToolRunner

TOOL_PROVIDER = "tools"
CACHE_PROVIDER = "tool-cache"


class ToolProcessor:
    name = "tools"

    def __init__(self, runner: ToolRunner, clock: Clock, metrics: ToolMetrics | None = None) -> None:
        self.runner = runner
        self.clock = clock
        self.metrics = metrics

    def handle(self, call: ToolCall, origin: str) -> Outcome:
        outcome = self.runner.run(call.tenant_id, call.route, call.tool, call.arguments, call.call_id)
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
            provider=CACHE_PROVIDER if outcome.cached else TOOL_PROVIDER, model=call.tool, occurred_at=now,
            latency_ms=round(outcome.latency_ms, 3), outcome="ok" if outcome.ok else (outcome.error_class or "error"),
            attempt=max(1, outcome.attempts))
        outputs = [Output("tools.results", call.ticket_id, result), Output("llm.usage", call.tenant_id, usage)]
        if outcome.changed_data is not None:
            outputs.append(Output("tools.invalidations", call.tenant_id, ToolInvalidation(
                tenant_id=call.tenant_id, data_source=outcome.changed_data, created_at=now,
                reason=f"{call.tool} {call.call_id}")))
        return Emit(tuple(outputs))


class ToolCacheInvalidator:
    """Reads ``tools.invalidations``: drops the tenant's cached results of that data source."""

    name = "tool-invalidator"

    def __init__(self, invalidate: Callable[[str, str], int]) -> None:
        self._invalidate = invalidate

    def handle(self, event: ToolInvalidation, origin: str) -> Outcome:
        self._invalidate(event.tenant_id, event.data_source)
        return Emit()
