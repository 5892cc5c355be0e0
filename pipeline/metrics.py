"""Prometheus metrics of the stream runtime, created on an injected registry."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Per-record handling is sub-millisecond to tens of ms; transactions add a broker round trip.
_HANDLE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_TXN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Batches range from 1 record (idle stream) to max_batch (500 by default).
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
#: Why a batch was rewound (``ticketflow_retries_total{reason}``).
RETRY_REASONS = ("dependency_down", "retryable_failure", "transaction_aborted")


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "ticketflow_records_total", "Input records handled, by outcome",
            ["processor", "outcome"], registry=registry,
        )
        self.dead_letters = Counter(
            "ticketflow_dead_letters_total", "Records written to the DLQ, by error class",
            ["processor", "error_class"], registry=registry,
        )
        self.retries = Counter(
            "ticketflow_retries_total", "Batches rewound for a retryable failure or an aborted transaction",
            ["processor", "reason"], registry=registry,
        )
        self.handle_seconds = Histogram(
            "ticketflow_handle_seconds", "Time to decode and handle one record",
            ["processor"], buckets=_HANDLE_BUCKETS, registry=registry,
        )
        self.transaction_seconds = Histogram(
            "ticketflow_transaction_seconds", "Time to commit one transaction (outputs + offsets)",
            ["processor"], buckets=_TXN_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "ticketflow_batch_records", "Records per transaction",
            ["processor"], buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.dependency_up = Gauge(
            "ticketflow_dependency_up", "1 while the dependency answers its health probe, 0 while it is down",
            ["dependency"], registry=registry,
        )
        self.stalled_seconds = Gauge(
            "ticketflow_dependency_stalled_seconds",
            "How long a processor has been paused waiting for a dependency (0 when it is not)",
            ["processor", "dependency"], registry=registry,
        )

    def start(self, processor: str, dependencies: Iterable[str]) -> None:
        """Export a processor's retry counters and stall gauges at 0 from its start, so that a
        dashboard shows a flat line (not "no data") and ``rate()`` sees the first increment."""
        for reason in RETRY_REASONS:
            self.retries.labels(processor, reason)
        for dependency in dependencies:
            self.stalled_seconds.labels(processor, dependency).set(0)
