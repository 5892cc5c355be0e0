"""Run one tool call safely: allowlist, validation, cache, circuit breaker, timeout, retries.

The order is the guarantee. A call is refused before anything runs when its route does not
allow the tool (a ticket's text cannot grant itself tools) or when its arguments fail the
tool's schema (a side-effecting tool never runs on unvalidated arguments). Only then is the
cache asked (deterministic tools), the tool's breaker consulted, and the tool run under a
timeout, with retries (backoff with full jitter) for failures that may heal. Every outcome
is a value: nothing here raises for a tool's fault, so a ticket always gets an answer or an
escalation with the reason.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.errors import TicketflowError
from pipeline.resilience import CircuitBreaker, RetrySchedule
from pipeline.tools.registry import ToolArgumentError, ToolContext, ToolRegistry, ToolSpec, UnknownTool

log = logging.getLogger(__name__)


class ToolResultCache(Protocol):
    def get(self, tenant: str, spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any] | None: ...

    def put(self, tenant: str, spec: ToolSpec, arguments: dict[str, Any], result: dict[str, Any]) -> None: ...

    def invalidate(self, tenant: str, source: str) -> int: ...


class Allowlists(Protocol):
    def allowed_tools(self, route: str) -> frozenset[str] | None:
        """The tools ``route`` may call; None when no such route exists."""
        ...


WOULD_HAVE_RUN = "would_have_run"


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    ok: bool
    result: dict[str, Any] | None = None
    error_class: str | None = None
    error_message: str | None = None
    cached: bool = False
    latency_ms: float = 0.0
    attempts: int = 0  # calls that reached the tool (0: refused, cached or breaker open)
    changed_data: str | None = None  # a side effect was applied to this data source
    would_have_run: bool = False  # a side effect validated but not applied (a replay)

    @property
    def reached_tool(self) -> bool:
        return self.attempts > 0


def _refused(error_class: str, message: str, started: float) -> ToolOutcome:
    return ToolOutcome(False, error_class=error_class, error_message=message,
                       latency_ms=(time.perf_counter() - started) * 1000)


class ToolRunner:
    def __init__(self, registry: ToolRegistry, allowlists: Allowlists, cache: ToolResultCache | None = None,
                 schedule: RetrySchedule | None = None, breaker: Callable[[str], CircuitBreaker] | None = None,
                 rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep,
                 threads: int = 8) -> None:
        self.registry = registry
        self.allowlists = allowlists
        self.cache = cache
        self.schedule = schedule or RetrySchedule(max_attempts=3, base_s=0.05, cap_s=0.5)
        self._make_breaker = breaker or (lambda tool: CircuitBreaker(failure_threshold=5, cooldown_s=30.0))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.rng = rng or random.Random(0)
        self.sleep = sleep
        # Calls run on these threads so that a hung tool costs its timeout, not the stream.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ticketflow-tool")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def breaker(self, tool: str) -> CircuitBreaker:
        if tool not in self.breakers:
            self.breakers[tool] = self._make_breaker(tool)
        return self.breakers[tool]

    def run(self, tenant: str, route: str, tool: str, arguments: str, call_id: str,
            effects: bool = True) -> ToolOutcome:
        """Run one call. Without ``effects`` (a replay) a side-effecting tool is checked like
        any call (allowlist, arguments) and then not run: ``{"status": "would_have_run"}``."""
        started = time.perf_counter()
        allowed = self.allowlists.allowed_tools(route)
        if allowed is None:
            return _refused("ToolNotAllowed", f"no route named {route!r}: it may call no tool", started)
        if tool not in allowed:
            return _refused("ToolNotAllowed", f"route {route!r} may not call {tool!r} "
                            f"(allowed: {', '.join(sorted(allowed)) or 'none'})", started)
        try:
            parsed = json.loads(arguments)
            checked = self.registry.validate(tool, parsed, idempotency_key=call_id)
        except json.JSONDecodeError as exc:
            return _refused("ToolArgumentError", f"{tool}: arguments are not JSON: {exc}", started)
        except (ToolArgumentError, UnknownTool) as exc:
            return _refused(type(exc).__name__, str(exc), started)
        spec = self.registry.spec(tool)
        if spec.side_effecting and not effects:
            return ToolOutcome(True, {"status": WOULD_HAVE_RUN, "tool": tool, "arguments": checked},
                               latency_ms=(time.perf_counter() - started) * 1000, would_have_run=True)
        if self.cache is not None and spec.deterministic:
            hit = self.cache.get(tenant, spec, checked)
            if hit is not None:
                return ToolOutcome(True, hit, cached=True, latency_ms=(time.perf_counter() - started) * 1000)
        outcome = self._call(spec, ToolContext(tenant, call_id), checked)
        if outcome.ok and outcome.result is not None and self.cache is not None:
            if spec.deterministic:
                self.cache.put(tenant, spec, checked, outcome.result)
            elif spec.side_effecting and spec.data_source is not None:
                # At once, so that this worker's next lookup sees the change; the published
                # ToolInvalidation tells every other consumer of the data.
                self.cache.invalidate(tenant, spec.data_source)
        return ToolOutcome(outcome.ok, outcome.result, outcome.error_class, outcome.error_message,
                           latency_ms=(time.perf_counter() - started) * 1000, attempts=outcome.attempts,
                           changed_data=spec.data_source if outcome.ok and spec.side_effecting else None)

    def _call(self, spec: ToolSpec, ctx: ToolContext, arguments: dict[str, Any]) -> ToolOutcome:
        breaker = self.breaker(spec.name)
        function = self.registry.function(spec.name)
        attempt = 0
        while True:
            if not breaker.allow():
                return ToolOutcome(False, error_class="CircuitOpen", attempts=attempt,
                                   error_message=f"{spec.name} is failing; its circuit breaker is open")
            attempt += 1
            result, error_class, message, retryable = self._attempt(spec, function, ctx, arguments)
            if error_class is None:
                breaker.record_success()
                return ToolOutcome(True, result, attempts=attempt)
            if not retryable:  # an answer about the data (not found, refused): the tool works
                breaker.record_success()
                return ToolOutcome(False, error_class=error_class, error_message=message, attempts=attempt)
            breaker.record_failure()
            delay = self.schedule.delay_s(attempt, self.rng)
            log.warning("tool %s attempt %d failed: %s: %s", spec.name, attempt, error_class, message)
            if delay is None:
                return ToolOutcome(False, error_class=error_class, attempts=attempt,
                                   error_message=f"{message} (after {attempt} attempts)")
            self.sleep(delay)

    def _attempt(self, spec: ToolSpec, function: Any, ctx: ToolContext,
                 arguments: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str, bool]:
        """(result, error class or None, message, retryable) of one call."""
        future = self._pool.submit(function, ctx, arguments)
        try:
            result = future.result(timeout=spec.timeout_s)
        except FutureTimeout:
            future.cancel()
            return None, "ToolTimeout", f"{spec.name} did not answer within {spec.timeout_s:g} s", True
        except TicketflowError as exc:
            return None, type(exc).__name__, str(exc), exc.retryable
        except Exception as exc:  # a tool's own bug or an unwrapped driver error: may heal, retry
            return None, type(exc).__name__, f"{spec.name} failed: {exc}", True
        if not isinstance(result, dict):
            return None, "ToolResultError", f"{spec.name} returned {type(result).__name__}, not an object", False
        return result, None, "", False
