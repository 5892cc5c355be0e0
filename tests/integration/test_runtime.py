"""The transactional runtime against real Kafka: retries, dead letters, outputs exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from pipeline.admin import apply_topics, delete_topics
from pipeline.client import TicketflowClient
from pipeline.errors import TransientError
from pipeline.events import TicketSubmitted
from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Emit, Outcome, Output
from pipeline.runtime.binding import Binding, per_record
from pipeline.runtime.engine import MAX_AHEAD, Engine, decode_ahead, encode_ahead
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


class SlowFirst:
    """A concurrent processor: ticket ``slow`` runs until ``release`` is set, the others at once."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.started: Counter[str] = Counter()

    def start(self, ticket: TicketSubmitted, origin: str) -> Future[TicketSubmitted]:
        self.started[ticket.ticket_id] += 1
        return self.pool.submit(self._work, ticket)

    def _work(self, ticket: TicketSubmitted) -> TicketSubmitted:
        if ticket.ticket_id == "slow":
            self.release.wait(60)
        return ticket

    def finish(self, ticket: TicketSubmitted, done: TicketSubmitted) -> Outcome:
        answer = escalate(ticket, "test", "done", 1_800_000_000_000)
        return Emit((Output("tickets.responses", ticket.ticket_id, answer),))


def test_a_concurrent_binding_commits_what_finished_behind_a_slow_record_and_never_redoes_it(
        settings: Settings) -> None:
    settings = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "ooo.", "topic_partitions": 1})
    apply_topics(settings)
    client = TicketflowClient(settings)
    tickets = [TicketSubmitted(ticket_id="slow", tenant_id="a", body="hi"),
               *(TicketSubmitted(ticket_id=f"fast-{i}", tenant_id="a", body="hi") for i in range(9))]
    release = threading.Event()
    work = SlowFirst(release)

    def engine(instance: str, stop: threading.Event) -> threading.Thread:
        binding = Binding("ooo", ("tickets.ingress",), "TicketSubmitted", TicketSubmitted.from_record,
                          start=work.start, finish=work.finish, max_in_flight=64)
        loop = Engine(binding, settings, make_serde(settings), instance, RuntimeMetrics(CollectorRegistry()), stop)
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        return thread

    first_stop = threading.Event()
    first = engine("ooo-0", first_stop)
    fast = {t.ticket_id for t in tickets} - {"slow"}
    try:
        client.submit(tickets)  # one partition: "slow" is the first offset, the others behind it
        # the fast ones are answered (read committed) while the first record still runs
        assert response_counts(client, fast, timeout_s=60) == Counter({t: 1 for t in fast})
        assert work.started["slow"] == 1
    finally:
        first_stop.set()
        first.join(30)
    # a new owner starts at the slow record; the fast ones behind it are in the commit's metadata
    second_stop = threading.Event()
    second = engine("ooo-1", second_stop)
    try:
        release.set()
        counts = response_counts(client, fast | {"slow"}, timeout_s=60)
    finally:
        second_stop.set()
        second.join(30)
        delete_topics(settings)
    assert counts == Counter({t.ticket_id: 1 for t in tickets})
    assert work.started["slow"] == 2  # once per owner: it had not been committed
    assert all(work.started[t] == 1 for t in fast)


def test_the_offsets_ahead_of_a_commit_round_trip_through_its_metadata() -> None:
    assert decode_ahead(10, encode_ahead(10, {12, 15, 11})) == {11, 12, 15}
    assert encode_ahead(10, set()) == "" and decode_ahead(10, "") == set() and decode_ahead(10, None) == set()
    assert decode_ahead(-1001, "ahead1:1,2") == set()  # no committed offset: nothing to skip
    assert decode_ahead(5, "someone else's metadata") == set()
    assert len(encode_ahead(0, set(range(1, MAX_AHEAD + 1)))) < 4096  # the broker's default cap
