"""What a broker outage does to a commit, with the producer's calls faked: a
send_offsets_to_transaction that outlives its timeout (librdkafka#5456), and a producer the
restarted broker fenced (its transaction outlived the timeout). Either way the transaction
is given up and redone on a new producer; neither stops the engine."""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from pipeline.metrics import RuntimeMetrics
from pipeline.runtime.transactions import OVERRUN_S, Transactions
from pipeline.settings import load_settings


class FakeProducer:
    """The transactional calls a commit makes; ``send_offsets`` blocks until ``release``."""

    def __init__(self, release: threading.Event | None = None, fenced_at: str = "") -> None:
        self.release = release
        self.fenced_at = fenced_at  # the call that raises the fatal _FENCED error
        self.calls: list[str] = []
        self.closed = False

    def _fence(self, call: str) -> None:
        if call == self.fenced_at:
            raise KafkaException(KafkaError(KafkaError._FENCED, "Failed to end transaction: Local: This "
                                            "instance has been fenced by a newer instance", fatal=True))

    def flush(self, timeout: float) -> int:
        self.calls.append("flush")
        self._fence("flush")
        return 0

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append(f"send_offsets({timeout:g})")
        if self.release is not None:
            self.release.wait()

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")
        self._fence("commit")

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        self._fence("begin")

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def close(self) -> None:
        self.closed = True


def transactions(guard: bool) -> Transactions:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1", transaction_timeout_ms=1000,
                             guard_send_offsets=guard)
    kafka = Transactions("unit", settings, None, "test-0", RuntimeMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    kafka._group_metadata = object()  # as after an assignment
    return kafka


def test_a_guarded_commit_sends_the_offsets_and_commits() -> None:
    for guard in (True, False):
        kafka = transactions(guard)
        producer = kafka.producer = FakeProducer()
        assert kafka.commit([], positions={("tickets.ingress", 0): (5, "")}) is True
        assert producer.calls == ["flush", "send_offsets(1)", "commit", "begin"]
        kafka.consumer.close()


def test_send_offsets_stuck_past_its_timeout_gives_up_on_a_new_producer_without_closing_the_old() -> None:
    kafka = transactions(guard=True)
    release = threading.Event()
    stuck = kafka.producer = FakeProducer(release)
    fresh = FakeProducer()
    kafka._new_producer = lambda: fresh  # type: ignore[method-assign]
    started = time.monotonic()
    try:
        assert kafka.commit([], positions={("tickets.ingress", 0): (5, "")}) is False  # the caller redoes
        waited = time.monotonic() - started
        assert 1 + OVERRUN_S - 0.2 <= waited < 1 + OVERRUN_S + 3, waited  # the timeout, then the overrun
        assert kafka.producer is fresh and fresh.calls == ["init"]  # fences the stuck one on the broker
        assert kafka.abandoned == 1
        assert not stuck.closed  # a thread is still inside it: closing it under that thread is unsafe
        # the next commit runs on a new guard thread and the new producer
        assert kafka.commit([], positions={("tickets.ingress", 0): (5, "")}) is True
        assert fresh.calls[1:] == ["flush", "send_offsets(1)", "commit", "begin"]
    finally:
        release.set()
        kafka.consumer.close()


def test_a_producer_fenced_by_the_restarted_broker_is_replaced_and_the_transaction_redone() -> None:
    for call in ("commit", "flush"):
        kafka = transactions(guard=True)
        old = kafka.producer = FakeProducer(fenced_at=call)
        fresh = FakeProducer()
        kafka._new_producer = lambda fresh=fresh: fresh  # type: ignore[method-assign, misc]
        assert kafka.commit([], positions={("tickets.ingress", 0): (5, "")}) is False  # redone, not fatal
        assert kafka.producer is fresh and fresh.calls == ["init"]
        kafka.consumer.close()
        # closing it is safe: no thread is inside it (it is closed on a thread of its own)
        deadline = time.monotonic() + 5
        while not old.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert old.closed


def test_a_fenced_producer_is_replaced_at_the_next_begin_and_closing_one_is_not_an_error() -> None:
    kafka = transactions(guard=False)
    kafka.producer = FakeProducer(fenced_at="begin")
    fresh = FakeProducer()
    kafka._new_producer = lambda: fresh  # type: ignore[method-assign]
    kafka.begin()
    assert kafka.producer is fresh and fresh.calls == ["init", "begin"]
    kafka.producer = FakeProducer(fenced_at="flush")
    kafka.close()  # a fenced producer's flush raises; the engine's stop must not turn into a failure
