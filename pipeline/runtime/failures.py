"""The runtime's one failure policy: what happens to a record whose processing failed.

Both ways of finishing records (a batch in order, or concurrent steps committed in offset
order) ask :meth:`FailurePolicy.judge` and act on its :class:`Verdict` the same way:

* a permanent failure (bad input, a processor bug, a dependency refusing the work): the
  record becomes a dead letter, with its original bytes, in the same transaction as the
  offsets;
* a transient failure (:class:`~pipeline.errors.Transient`, classified by the adapter that
  met it, :mod:`pipeline.faults`) whose dependency fails its health probe: **wait**. The
  record and everything after it in its partition are rewound, every partition is paused
  (the consumer keeps polling, so the worker stays in its group), the dependency is probed
  again after a capped exponential backoff with jitter, and work resumes by itself once it
  answers. Waiting never counts as an attempt, however long the outage: a sick dependency
  is not bad input;
* a transient failure while its dependency answers (or one with no probe): a counted retry
  after a backoff; after ``max_retries`` such attempts the record is poison and is
  dead-lettered (``retryable=true``, so ``ticketflow dlq redrive`` can try it again).

:class:`DependencyHealth` is shared by the processors of a worker: it probes, exports
``ticketflow_dependency_up{dependency}`` and logs once per change of state, not per record.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.errors import TicketflowError
from pipeline.metrics import RuntimeMetrics
from pipeline.processing import Failure

log = logging.getLogger(__name__)

Probe = Callable[[], object]


def as_failure(processor: str, exc: Exception, where: str) -> Failure:
    """A processor's exception as a Failure: ticketflow errors keep their kind (transient ones
    name their dependency); anything else is a bug in the processor, dead-lettered with its
    record (it must not stop the stream), its trace logged."""
    if isinstance(exc, TicketflowError):
        return Failure(type(exc).__name__, str(exc), retryable=exc.retryable,
                       dependency=getattr(exc, "dependency", None))
    log.error("%s: processor raised at %s", processor, where, exc_info=exc)
    return Failure(type(exc).__name__, f"processor error: {exc}")


class DependencyHealth:
    """Health probes of a worker's dependencies (``redis``: PING; ``sql``: SELECT 1)."""

    def __init__(self, probes: Mapping[str, Probe], metrics: RuntimeMetrics | None = None) -> None:
        self.probes = dict(probes)
        self.metrics = metrics
        self._down_since: dict[str, float] = {}
        self._lock = threading.Lock()
        for name in self.probes:
            self._gauge(name, True)

    def knows(self, dependency: str | None) -> bool:
        return dependency is not None and dependency in self.probes

    def up(self, dependency: str) -> bool:
        """Probe ``dependency`` now; records and logs a change of state."""
        try:
            self.probes[dependency]()
            healthy = True
        except Exception as exc:  # any failure of the probe means: not usable now
            healthy = False
            reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            since = self._down_since.get(dependency)
            if healthy and since is not None:
                del self._down_since[dependency]
                log.warning("%s is back after %.1f s: resuming", dependency, time.monotonic() - since)
            elif not healthy and since is None:
                self._down_since[dependency] = time.monotonic()
                log.warning("%s is down (%s): pausing the work that needs it until it answers", dependency,
                            reason[:200])
        self._gauge(dependency, healthy)
        return healthy

    def down_for(self, dependency: str) -> float:
        with self._lock:
            since = self._down_since.get(dependency)
        return 0.0 if since is None else time.monotonic() - since

    def _gauge(self, dependency: str, healthy: bool) -> None:
        if self.metrics is not None:
            self.metrics.dependency_up.labels(dependency).set(1 if healthy else 0)


@dataclass(frozen=True)
class Verdict:
    """``dead_letter``; or rewind the record and retry it after ``delay_s``, waiting first
    for ``wait_for`` (a dependency that is down) to answer its probe."""

    dead_letter: bool
    delay_s: float = 0.0
    wait_for: str | None = None


class FailurePolicy:
    def __init__(self, health: DependencyHealth, max_retries: int, base_s: float, cap_s: float,
                 rng: random.Random | None = None) -> None:
        self.health = health
        self.max_retries = max_retries
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng or random.Random()

    def judge(self, failure: Failure, attempts: int) -> Verdict:
        """``attempts``: the record's counted attempts so far, this one included."""
        if not failure.retryable:
            return Verdict(dead_letter=True)
        if self.health.knows(failure.dependency):
            assert failure.dependency is not None
            if not self.health.up(failure.dependency):
                return Verdict(dead_letter=False, delay_s=self.backoff(1), wait_for=failure.dependency)
        if attempts > self.max_retries:
            return Verdict(dead_letter=True)  # poison: fails although its dependency answers
        return Verdict(dead_letter=False, delay_s=self.backoff(attempts))

    def backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (between half and all of the step)."""
        step = float(min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1)))
        return step * (0.5 + 0.5 * self.rng.random())


class Stall:
    """A loop's wait for a dependency (or for a retry's backoff): when to probe next and
    how long it has lasted, exported as ``ticketflow_dependency_stalled_seconds``."""

    def __init__(self, processor: str, policy: FailurePolicy, verdict: Verdict,
                 metrics: RuntimeMetrics | None) -> None:
        self.processor = processor
        self.policy = policy
        self.dependency = verdict.wait_for
        self.metrics = metrics
        self.started = time.monotonic()
        self.next_probe = self.started + verdict.delay_s
        self.probes = 1

    def over(self) -> bool:
        """Whether work may resume now (probes the dependency when its time has come)."""
        now = time.monotonic()
        if self.dependency is not None and self.metrics is not None:
            self.metrics.stalled_seconds.labels(self.processor, self.dependency).set(now - self.started)
        if now < self.next_probe:
            return False
        if self.dependency is None or self.policy.health.up(self.dependency):
            self.end()
            return True
        self.probes += 1
        self.next_probe = now + self.policy.backoff(self.probes)
        return False

    def end(self) -> None:
        if self.dependency is not None and self.metrics is not None:
            self.metrics.stalled_seconds.labels(self.processor, self.dependency).set(0)
