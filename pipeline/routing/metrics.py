"""Prometheus metrics of the router, created on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from pipeline.routing.engine import RouteDecision

_DECISION_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter("ticketflow_router_decisions_total", "Router decisions by action and route "
                                 "(route 'none': no rule matched)", ["action", "route"], registry=registry)
        self.abstentions = Counter("ticketflow_router_abstentions_total", "Intent classifier abstentions by "
                                   "reason", ["reason"], registry=registry)
        self.decision_seconds = Histogram("ticketflow_router_decision_seconds", "Classification and rule "
                                          "matching per ticket (embedding excluded)",
                                          buckets=_DECISION_BUCKETS, registry=registry)

    def observe(self, decision: RouteDecision) -> None:
        self.decisions.labels(decision.kind, decision.rule.name if decision.rule else "none").inc()
        if decision.intent.intent is None:
            self.abstentions.labels(decision.intent.reason).inc()
