"""What a processor returns: outputs to emit, or a typed failure. No Kafka types here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.events import Event


@dataclass(frozen=True, slots=True)
class Output:
    """One event to publish. ``topic`` is a catalog name; the runtime adds the prefix."""

    topic: str
    key: str
    event: Event


@dataclass(frozen=True, slots=True)
class Emit:
    """Success: publish these outputs (possibly none) atomically with the input's offset."""

    outputs: Sequence[Output] = field(default_factory=tuple)
    note: str = ""  # why nothing was emitted, for logs and metrics (e.g. "duplicate")


@dataclass(frozen=True, slots=True)
class Failure:
    """The input cannot be handled now (retryable) or ever (dead-lettered with its bytes)."""

    error_class: str
    message: str
    retryable: bool = False
    dependency: str | None = None  # the dependency a transient failure met (pipeline.faults)


Outcome = Emit | Failure


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        import time

        return time.time_ns() // 1_000_000


class IdempotencyStore(Protocol):
    """Remembers which delivery first claimed a key.

    ``origin`` identifies one delivery of one input record (opaque to processors). A claim
    succeeds for the first origin and for that same origin again (a replay after a crash or
    an aborted transaction), and fails for any other origin (a duplicate submission).
    """

    def claim(self, key: str, origin: str) -> bool: ...

    def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        """``claim`` for each (key, origin) pair, in one round trip where the store can."""
        ...
