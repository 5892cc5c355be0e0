"""Prometheus metrics of the tool processor, created on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.tools.runner import ToolOutcome

_TOOL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class ToolMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter("ticketflow_tool_calls_total", "Tool calls by tool, outcome and source",
                             ["tool", "outcome", "source"], registry=registry)
        self.seconds = Histogram("ticketflow_tool_call_seconds", "Tool call time, cache hits included",
                                 ["tool", "source"], buckets=_TOOL_BUCKETS, registry=registry)
        self.breaker = Gauge("ticketflow_tool_breaker_state", "Circuit breaker per tool: 0 closed, 1 half-open, "
                             "2 open", ["tool"], registry=registry)

    def observe(self, tool: str, outcome: ToolOutcome, breaker_state: str) -> None:
        source = "cache" if outcome.cached else ("tool" if outcome.reached_tool else "refused")
        self.calls.labels(tool, "ok" if outcome.ok else outcome.error_class or "error", source).inc()
        self.seconds.labels(tool, source).observe(outcome.latency_ms / 1000)
        self.breaker.labels(tool).set(BREAKER_STATES[breaker_state])
