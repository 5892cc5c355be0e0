"""In-memory stand-ins for ports, for unit tests (no services)."""

from __future__ import annotations

from collections.abc import Sequence


class FixedClock:
    def __init__(self, now_ms: int = 1_800_000_000_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


class MemoryIdempotencyStore:
    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.round_trips = 0

    def claim(self, key: str, origin: str) -> bool:
        return self.owners.setdefault(key, origin) == origin

    def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        self.round_trips += 1
        return [self.claim(key, origin) for key, origin in claims]
