"""The transactional runtime against real Kafka: retries, dead letters, outputs exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from pipeline.client import TicketflowClient
from pipeline.errors import TransientError
from pipeline.events import TicketSubmitted
from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Emit, Outcome, Output
from pipeline.runtime.binding import Binding, per_record
from pipeline.runtime.engine import Engine
from pipeline.runtime.worker import make_serde
from pipeline.settings import Settings
from processors.escalation import escalate
from tests.helpers import dead_letters, response_counts

pytestmark = pytest.mark.integration


class FlakyResolver:
    """Fails with a transient error ``failures`` times per ticket, then resolves it."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        self.calls[ticket.ticket_id] += 1
        if self.calls[ticket.ticket_id] <= self.failures.get(ticket.ticket_id, 0):
            raise TransientError("dependency timed out")
        return Emit((Output("tickets.responses", ticket.ticket_id,
                            escalate(ticket, "test", "flaky", 1_800_000_000_000)),))


def run_loop(settings: Settings, resolver: FlakyResolver, stop: threading.Event) -> threading.Thread:
    binding = Binding("flaky", ("tickets.ingress",), "TicketSubmitted", TicketSubmitted.from_record,
                      handle_batch=per_record("flaky", resolver.handle), allow_json=True)
    loop = Engine(binding, settings, make_serde(settings), "test-0", RuntimeMetrics(CollectorRegistry()), stop)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return thread


def test_transient_failures_are_retried_then_dead_lettered(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_retries": 3, "retry_backoff_ms": 10})
    client = TicketflowClient(settings)
    tickets = [TicketSubmitted(ticket_id=f"r-{i}", tenant_id="a", body="hi") for i in range(30)]
    resolver = FlakyResolver({"r-3": 2, "r-17": 1, "r-29": 99})
    stop = threading.Event()
    thread = run_loop(settings, resolver, stop)
    try:
        client.submit(tickets)
        counts = response_counts(client, {t.ticket_id for t in tickets} - {"r-29"}, timeout_s=60)
        # r-29's retries back off on their own clock: wait for its dead letter, not for the others.
        deadline = time.monotonic() + 60
        while not (letters := dead_letters(client)) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
    assert counts == Counter({t.ticket_id: 1 for t in tickets if t.ticket_id != "r-29"})
    assert resolver.calls["r-3"] == 3 and resolver.calls["r-17"] == 2
    assert resolver.calls["r-29"] == 4  # first try + max_retries
    [letter] = letters
    assert letter.key == b"r-29" and letter.retryable and letter.attempt == 4
    assert letter.error_class == "TransientError" and "timed out" in letter.error_message
    assert TicketSubmitted.from_record(client.serde.decode("TicketSubmitted", letter.value or b"")).ticket_id == "r-29"
