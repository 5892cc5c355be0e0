"""Prometheus metrics of LLM calls and agent steps, created on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from pipeline.agent.runner import CallRecord
from pipeline.llm.types import LLMResponse

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter("ticketflow_llm_calls_total", "LLM calls by provider, model and outcome (a reused "
                             "recorded result counts as outcome reused)", ["provider", "model", "outcome"],
                             registry=registry)
        self.tokens = Counter("ticketflow_llm_tokens_total", "Tokens by model and kind (in, out, cached)",
                              ["model", "kind"], registry=registry)
        self.cost = Counter("ticketflow_llm_cost_micros_total", "LLM spend in micro-dollars by tenant, workflow and "
                            "model", ["tenant", "workflow", "model"], registry=registry)
        self.ttft = Histogram("ticketflow_llm_ttft_seconds", "Time to first token per served call", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram("ticketflow_llm_latency_seconds", "Whole call per served call", ["model"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.escalations = Counter("ticketflow_agent_escalations_total", "Agent steps ending in a hand-off, by "
                                   "reason kind", ["reason"], registry=registry)
        self.wait = Histogram("ticketflow_agent_step_wait_seconds", "From a step being queued (routed, or its "
                              "tool result back) to its first LLM call, by lane", ["lane"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
                              registry=registry)
        self.cascades = Counter("ticketflow_agent_cascade_total", "Steps by the tier whose answer stood",
                                ["tier"], registry=registry)

    def waited(self, lane: str, seconds: float) -> None:
        self.wait.labels(lane).observe(seconds)

    def paid(self, tenant: str, workflow: str, model: str, response: LLMResponse, cost_micros: int) -> None:
        """A reply paid for, counted the moment it arrives (not when its step finishes: a step
        whose partition moved away is finished elsewhere, reusing the reply, which is not paid
        again), so the spend here sums to the accounting records on ``llm.usage``."""
        self.tokens.labels(model, "in").inc(response.tokens_in)
        self.tokens.labels(model, "out").inc(response.tokens_out)
        self.tokens.labels(model, "cached").inc(response.tokens_cached)
        self.cost.labels(tenant, workflow, model).inc(cost_micros)
        self.ttft.labels(model).observe(response.ttft_ms / 1000)
        self.latency.labels(model).observe(response.latency_ms / 1000)

    def observe(self, tenant: str, workflow: str, calls: list[CallRecord], tier: str, escalation: str) -> None:
        for call in calls:
            for error in call.failures:
                self.calls.labels(call.provider, call.model, error).inc()
            response = call.response
            if response is None:
                continue
            self.calls.labels(call.provider, call.model, "reused" if call.reused else "ok").inc()
        if escalation:
            self.escalations.labels(escalation.split(":")[0]).inc()
        elif tier:
            self.cascades.labels(tier).inc()
