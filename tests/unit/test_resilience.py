"""Circuit breaker states and the retry schedule, on an injected clock and random source."""

from __future__ import annotations

import random

import pytest

from pipeline.resilience import CircuitBreaker, RetrySchedule


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # a fresh read (mypy would keep a narrowed property type across calls)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_closes_after_a_good_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # not consecutive any more
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) == "open" and not breaker.allow()
    clock.now += 10
    assert state(breaker) == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert state(breaker) == "closed" and breaker.allow()


def test_a_failed_probe_opens_again_for_a_whole_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_retry_delays_grow_are_capped_honour_retry_after_and_end() -> None:
    schedule = RetrySchedule(max_attempts=4, base_s=1.0, cap_s=3.0)
    rng = random.Random(1)
    delays = [schedule.delay_s(attempt, rng) for attempt in (1, 2, 3)]
    assert all(d is not None for d in delays)
    assert 0 <= delays[0] <= 1 and 0 <= delays[1] <= 2 and 0 <= delays[2] <= 3  # type: ignore[operator]
    assert schedule.delay_s(1, rng, retry_after_s=7.5) == 7.5
    assert schedule.delay_s(4, rng) is None


def test_jitter_is_reproducible_for_a_seed() -> None:
    schedule = RetrySchedule()
    assert [schedule.delay_s(2, random.Random(9)) for _ in range(3)] == [schedule.delay_s(2, random.Random(9))] * 3


def test_invalid_breaker_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
