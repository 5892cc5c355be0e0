"""Per-tenant (daily) and per-ticket budgets in Redis: reserve the worst case, settle the actual.

A reservation is checked against what is spent *and* reserved, and taken in one Lua script,
so concurrent workers cannot all pass the check before any of them pays: a budget is never
exceeded by more than what a settled call cost beyond its reservation (the reservation is
the worst case, so normally not at all). Reservations are idempotent by id (the step id
and tier): a step that runs again after a crash does not reserve twice, and a settlement is
applied once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

_RESERVE = """
local state = redis.call('GET', KEYS[3])
if state then return {1, 0} end
local amount = tonumber(ARGV[1])
local tenant = tonumber(redis.call('GET', KEYS[1]) or '0')
local ticket = tonumber(redis.call('GET', KEYS[2]) or '0')
if tenant + amount > tonumber(ARGV[2]) then return {0, tenant} end
if ticket + amount > tonumber(ARGV[3]) then return {-1, ticket} end
redis.call('INCRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], 'R:' .. amount, 'EX', ARGV[4])
return {1, amount}
"""

_SETTLE = """
local state = redis.call('GET', KEYS[3])
if not state or string.sub(state, 1, 2) ~= 'R:' then return 0 end
local delta = tonumber(ARGV[1]) - tonumber(string.sub(state, 3))
redis.call('INCRBY', KEYS[1], delta)
redis.call('INCRBY', KEYS[2], delta)
redis.call('SET', KEYS[3], 'S:' .. ARGV[1], 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Reservation:
    granted: bool
    reason: str = ""  # tenant_budget or ticket_budget when refused


class RedisBudgets:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 3 * 24 * 3600) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, tenant: str, ticket: str, reservation: str, day: str | None = None) -> list[str]:
        day = day or datetime.now(UTC).strftime("%Y%m%d")
        return [f"{self.key_prefix}budget:tenant:{tenant}:{day}", f"{self.key_prefix}budget:ticket:{ticket}",
                f"{self.key_prefix}budget:res:{reservation}"]

    def reserve(self, tenant: str, ticket: str, reservation: str, amount_micros: int, tenant_limit: int,
                ticket_limit: int) -> Reservation:
        granted, _ = self._reserve(keys=self._keys(tenant, ticket, reservation),
                                   args=[amount_micros, tenant_limit, ticket_limit, self.ttl_s])
        if int(granted) == 1:
            return Reservation(True)
        return Reservation(False, "tenant_budget" if int(granted) == 0 else "ticket_budget")

    def settle(self, tenant: str, ticket: str, reservation: str, actual_micros: int) -> bool:
        """Replace the reservation by the actual cost (0 when the call failed); once per id."""
        return bool(self._settle(keys=self._keys(tenant, ticket, reservation), args=[actual_micros, self.ttl_s]))

    def spent(self, tenant: str, day: str | None = None) -> int:
        """Spent plus reserved today (micro-dollars)."""
        value = self.client.get(self._keys(tenant, "-", "-", day)[0])
        return int(value) if value is not None else 0

    def ticket_spent(self, ticket: str) -> int:
        value = self.client.get(f"{self.key_prefix}budget:ticket:{ticket}")
        return int(value) if value is not None else 0
