"""In-memory stand-ins for ports, for unit tests (no services)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pipeline.cache.audit import AuditState


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


class MemoryStepResults:
    """Recorded LLM results and call leases in memory (the agent runner's StepResults port)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, response: Any) -> Any:
        return self.data.setdefault(key, response)

    def claim(self, key: str, owner: str, ttl_s: float) -> bool:
        return True

    def renew(self, key: str, owner: str, ttl_s: float) -> None:
        return None

    def release(self, key: str) -> None:
        return None


class MemoryAuditLedger:
    """The cache audit's ledger in memory (the Redis one: pipeline/adapters/redis_audit.py)."""

    def __init__(self) -> None:
        self.states: dict[str, AuditState] = {}
        self.seen: set[tuple[str, str]] = set()
        self.history: list[tuple[str, int, str]] = []

    def record(self, tenant: str, audit_id: str, agreed: bool) -> AuditState:
        state = self.states.get(tenant, AuditState())
        if (tenant, audit_id) not in self.seen:
            self.seen.add((tenant, audit_id))
            state = dataclasses.replace(state, audited=state.audited + 1, agreed=state.agreed + agreed)
            self.states[tenant] = state
        return state

    def set_level(self, tenant: str, level: int, reason: str, at_audited: int | None = None) -> None:
        state = self.states.get(tenant, AuditState())
        self.states[tenant] = dataclasses.replace(state, level=level, tightened_at=(
            at_audited if at_audited is not None else state.tightened_at))
        self.history.append((tenant, level, reason))

    def state(self, tenant: str) -> AuditState:
        return self.states.get(tenant, AuditState())
