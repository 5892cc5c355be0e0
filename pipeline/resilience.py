"""Circuit breakers and retry schedules, for tools (issue 4) and LLM providers (issue 5).

Both take an injected clock and random source, so that tests are exact and a replay makes
the same decisions. Neither sleeps: callers (stream processors) must not block their loop,
so a breaker says whether a call may go out and a schedule says when the next attempt is due.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``cooldown_s`` it lets one
    probe call through (half-open): its success closes the breaker, its failure opens it again."""

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] | None = None) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        import time

        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock or time.monotonic
        self.failures = 0
        self.opened_at: float | None = None
        self._probe_out = False

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._probe_out = False

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
        self._probe_out = False


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with full jitter (AWS architecture blog), capped, honouring Retry-After."""

    max_attempts: int = 4
    base_s: float = 0.2
    cap_s: float = 10.0

    def delay_s(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed;
        None when no attempts remain. A server's Retry-After is a floor, never shortened."""
        if attempt >= self.max_attempts:
            return None
        jittered = rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        return max(jittered, retry_after_s or 0.0)
