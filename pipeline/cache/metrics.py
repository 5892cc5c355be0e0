"""Prometheus metrics of the semantic cache, created on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.cache.audit import AuditState
from pipeline.cache.policy import Verdict

# Index search + decision: ~1 ms; the budget is 5 ms at p99 with 100k entries per tenant.
_LOOKUP_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
_EMBED_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIMILARITY_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter("ticketflow_cache_lookups_total", "Cache lookups by result and reason",
                               ["tenant", "result", "reason"], registry=registry)
        self.similarity = Histogram("ticketflow_cache_similarity", "Similarity of the nearest entry",
                                    ["result"], buckets=_SIMILARITY_BUCKETS, registry=registry)
        self.lookup_seconds = Histogram("ticketflow_cache_lookup_seconds",
                                        "Index search and hit decision per query (embedding excluded)",
                                        buckets=_LOOKUP_BUCKETS, registry=registry)
        self.embed_seconds = Histogram("ticketflow_cache_embed_seconds", "Time to embed one micro-batch",
                                       buckets=_EMBED_BUCKETS, registry=registry)
        self.entries = Gauge("ticketflow_cache_entries", "Live entries per tenant (this replica)",
                             ["tenant"], registry=registry)
        self.writes = Counter("ticketflow_cache_writes_total", "Cache updates applied, by operation",
                              ["op"], registry=registry)

    def observe(self, tenant: str, verdict: Verdict) -> None:
        result = "hit" if verdict.hit else "miss"
        self.lookups.labels(tenant, result, verdict.reason).inc()
        if verdict.similarity is not None:
            self.similarity.labels(result).observe(verdict.similarity)


class AuditMetrics:
    """The live audit per tenant: counts, the precision estimate and its 95 % interval, the
    policy level. Gauges hold the ledger's state as of the last audit this worker recorded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.audits = Counter("ticketflow_cache_audits_total", "Audited cache hits by outcome",
                              ["tenant", "outcome"], registry=registry)
        self.precision = Gauge("ticketflow_cache_audit_precision", "Audited share of hits whose key the "
                               "auditing path confirmed", ["tenant"], registry=registry)
        self.precision_low = Gauge("ticketflow_cache_audit_precision_low", "Wilson 95 % lower bound",
                                   ["tenant"], registry=registry)
        self.precision_high = Gauge("ticketflow_cache_audit_precision_high", "Wilson 95 % upper bound",
                                    ["tenant"], registry=registry)
        self.audited = Gauge("ticketflow_cache_audited", "Audited hits so far (ledger)", ["tenant"],
                             registry=registry)
        self.level = Gauge("ticketflow_cache_policy_level", "The audit's tightening level of the tenant's "
                           "hit policy (0: as calibrated)", ["tenant"], registry=registry)
        self.target = Gauge("ticketflow_cache_audit_target", "The precision the tenant's cache must hold",
                            ["tenant"], registry=registry)

    def observe(self, tenant: str, agreed: bool, state: AuditState, target: float) -> None:
        self.audits.labels(tenant, "agreed" if agreed else "disagreed").inc()
        low, high = state.interval
        self.precision.labels(tenant).set(state.estimate)
        self.precision_low.labels(tenant).set(low)
        self.precision_high.labels(tenant).set(high)
        self.audited.labels(tenant).set(state.audited)
        self.level.labels(tenant).set(state.level)
        self.target.labels(tenant).set(target)
