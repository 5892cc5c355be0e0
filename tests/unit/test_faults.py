"""Dependency faults classified at the adapter boundary, and the runtime's one failure policy."""

from __future__ import annotations

import random
import sqlite3

import psycopg
import pytest
import redis.exceptions as rex
from qdrant_client.http.exceptions import UnexpectedResponse

from pipeline.errors import Permanent, TicketflowError, Transient
from pipeline.faults import adapter, classify
from pipeline.processing import Emit, Failure
from pipeline.runtime.binding import Binding, per_record
from pipeline.runtime.failures import DependencyHealth, FailurePolicy


@pytest.mark.parametrize("exc", [
    rex.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    rex.TimeoutError("Timeout reading from socket"),
    rex.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
    rex.ReadOnlyError("READONLY You can't write against a read only replica."),
    rex.ResponseError("MASTERDOWN Link with MASTER is down"),
    ConnectionResetError(104, "Connection reset by peer"),
])
def test_redis_outages_are_transient_and_name_redis(exc: Exception) -> None:
    fault = classify(exc, "redis")
    assert isinstance(fault, Transient) and fault.dependency == "redis" and fault.retryable


def test_a_bad_command_is_permanent() -> None:
    fault = classify(rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "redis")
    assert isinstance(fault, Permanent) and not fault.retryable


def test_sql_and_qdrant_faults() -> None:
    assert isinstance(classify(psycopg.OperationalError("server closed the connection"), "sql"), Transient)
    assert isinstance(classify(psycopg.errors.UniqueViolation("duplicate key"), "sql"), Permanent)
    assert isinstance(classify(sqlite3.OperationalError("database is locked"), "sql"), Transient)
    assert isinstance(classify(sqlite3.OperationalError("no such table: cards"), "sql"), Permanent)
    unavailable = UnexpectedResponse(503, "Service Unavailable", b"", None)  # type: ignore[arg-type]
    bad = UnexpectedResponse(400, "Bad Request", b"", None)  # type: ignore[arg-type]
    assert isinstance(classify(unavailable, "qdrant"), Transient)
    assert isinstance(classify(bad, "qdrant"), Permanent)


def test_the_adapter_decorator_classifies_every_public_method() -> None:
    @adapter("redis")
    class Store:
        def get(self) -> str:
            raise rex.ConnectionError("refused")

        def bad(self) -> str:
            raise rex.ResponseError("ERR syntax error")

        def ours(self) -> str:
            raise Transient("already classified", "redis")

    store = Store()
    with pytest.raises(Transient) as down:
        store.get()
    assert down.value.dependency == "redis" and isinstance(down.value.__cause__, rex.ConnectionError)
    with pytest.raises(Permanent):
        store.bad()
    with pytest.raises(TicketflowError, match="already classified"):
        store.ours()


class Probe:
    def __init__(self, up: bool) -> None:
        self.is_up = up

    def __call__(self) -> object:
        if not self.is_up:
            raise ConnectionRefusedError("refused")
        return True


def test_a_dependency_that_is_down_is_waited_for_however_long() -> None:
    probe = Probe(up=False)
    policy = FailurePolicy(DependencyHealth({"redis": probe}), max_retries=3, base_s=0.2, cap_s=2.0,
                           rng=random.Random(1))
    down = Failure("Transient", "refused", retryable=True, dependency="redis")
    for attempts in (1, 10, 1000):  # never a dead letter while it is down
        verdict = policy.judge(down, attempts)
        assert not verdict.dead_letter and verdict.wait_for == "redis"
    assert policy.health.down_for("redis") >= 0.0
    probe.is_up = True  # up again: the same failure is now a counted retry, then poison
    assert policy.judge(down, 1).wait_for is None and not policy.judge(down, 3).dead_letter
    assert policy.judge(down, 4).dead_letter


def test_permanent_failures_are_dead_letters_and_backoff_is_capped_with_jitter() -> None:
    policy = FailurePolicy(DependencyHealth({}), max_retries=5, base_s=0.2, cap_s=2.0, rng=random.Random(7))
    assert policy.judge(Failure("InvalidTicket", "body is empty"), 1).dead_letter
    delays = [policy.backoff(n) for n in range(1, 12)]
    assert all(0.1 <= d <= 2.0 for d in delays) and max(delays) > 1.0
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # jitter: capped steps are not all equal


def test_per_record_stops_at_the_first_retryable_failure_and_dead_letters_bugs() -> None:
    def handle(n: int, origin: str) -> Emit:
        if n == 2:
            raise ZeroDivisionError("a bug")
        if n == 4:
            raise Transient("redis down", "redis")
        return Emit()

    outcomes = per_record("p", handle)([(n, f"o{n}") for n in range(7)])
    assert len(outcomes) == 5  # 5 and 6 not handled: consumed again
    assert isinstance(outcomes[2], Failure) and not outcomes[2].retryable  # a bug: its record only
    assert isinstance(outcomes[4], Failure) and outcomes[4].dependency == "redis"


def test_a_binding_gives_one_way_of_finishing_records() -> None:
    with pytest.raises(ValueError):
        Binding("x", ("tickets.ingress",), "TicketSubmitted", lambda r: r)  # type: ignore[arg-type,return-value]
