"""Per-tenant (daily) and per-ticket budgets in Redis: reserve the worst case, settle the actual.

A reservation is checked against what is spent *and* reserved, and taken in one Lua script,
so concurrent workers cannot all pass the check before any of them pays: a budget is never
exceeded by more than what a settled call cost beyond its reservation (the reservation is
the worst case, so normally not at all). Reservations are idempotent by id (the step id
and tier): a step that runs again after a crash does not reserve twice, and a settlement is
applied once; a reservation found taken and not settled tells the step that an attempt of
a crashed worker was in flight under that id. A settlement goes to the day its reservation was taken on (the reservation
records it): a call reserved before midnight and settled after it must not leave the old day
over-reserved and the new day negative (a test once ran across midnight UTC and saw both).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from pipeline.faults import adapter

_RESERVE = """
local state = redis.call('GET', KEYS[3])
if state then
  if string.sub(state, 1, 2) == 'R:' then return {2, 0} end
  return {1, 0}
end
local amount = tonumber(ARGV[1])
local tenant = tonumber(redis.call('GET', KEYS[1]) or '0')
local ticket = tonumber(redis.call('GET', KEYS[2]) or '0')
if tenant + amount > tonumber(ARGV[2]) then return {0, tenant} end
if ticket + amount > tonumber(ARGV[3]) then return {-1, ticket} end
local scoped = #KEYS >= 5
if scoped then
  local cap = redis.call('GET', KEYS[5])
  local spent = tonumber(redis.call('GET', KEYS[4]) or '0')
  if cap and spent + amount > tonumber(cap) then return {-2, spent} end
  redis.call('INCRBY', KEYS[4], amount)
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
redis.call('INCRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local mark = 'R:' .. amount .. ':' .. ARGV[5]
if scoped then mark = mark .. ':' .. ARGV[6] end
redis.call('SET', KEYS[3], mark, 'EX', ARGV[4])
return {1, amount}
"""

_SETTLE = """
local state = redis.call('GET', KEYS[3])
if not state or string.sub(state, 1, 2) ~= 'R:' then return 0 end
local delta = tonumber(ARGV[1]) - tonumber(string.match(state, '^R:(%-?%d+)'))
redis.call('INCRBY', KEYS[1], delta)
redis.call('INCRBY', KEYS[2], delta)
if #KEYS >= 4 then redis.call('INCRBY', KEYS[4], delta) end
redis.call('SET', KEYS[3], 'S:' .. ARGV[1], 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Reservation:
    granted: bool
    reason: str = ""  # tenant_budget or ticket_budget when refused
    # Granted earlier and never settled: an attempt under this id was left in flight (its
    # worker died after reserving); the provider may have served it.
    resumed: bool = False


@adapter("redis")
class RedisBudgets:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 3 * 24 * 3600) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, tenant: str, ticket: str, reservation: str, day: str | None = None,
              scope: str | None = None) -> list[str]:
        day = day or _today()
        keys = [f"{self.key_prefix}budget:tenant:{tenant}:{day}", f"{self.key_prefix}budget:ticket:{ticket}",
                f"{self.key_prefix}budget:res:{reservation}"]
        if scope:
            keys += [self.scope_key(scope), self.scope_key(scope) + ":cap"]
        return keys

    def scope_key(self, scope: str) -> str:
        """What a scope (a replay tag) has spent and reserved; its cap is at ``<key>:cap``."""
        return f"{self.key_prefix}budget:scope:{scope}"

    def reserve(self, tenant: str, ticket: str, reservation: str, amount_micros: int, tenant_limit: int,
                ticket_limit: int, scope: str | None = None) -> Reservation:
        """Reserve against the tenant's day, the ticket and, with ``scope`` (a replay's tag),
        the scope's cap when one is set (:meth:`set_cap`): refused with ``scope_budget``."""
        day = _today()
        args: list[object] = [amount_micros, tenant_limit, ticket_limit, self.ttl_s, day]
        if scope:
            args.append(scope)
        granted, _ = self._reserve(keys=self._keys(tenant, ticket, reservation, day, scope), args=args)
        if int(granted) in (1, 2):
            return Reservation(True, resumed=int(granted) == 2)
        return Reservation(False, {0: "tenant_budget", -1: "ticket_budget"}.get(int(granted), "scope_budget"))

    def settle(self, tenant: str, ticket: str, reservation: str, actual_micros: int) -> bool:
        """Replace the reservation by the actual cost (0 when the call failed); once per id, on
        the day the reservation was taken (and in its scope, if it had one)."""
        state = self.client.get(self._keys(tenant, ticket, reservation)[2])
        parts = state.decode().split(":") if isinstance(state, bytes) else []
        taken = len(parts) >= 3 and parts[0] == "R"
        day = parts[2] if taken else None
        scope = parts[3] if taken and len(parts) >= 4 else None
        return bool(self._settle(keys=self._keys(tenant, ticket, reservation, day, scope),
                                 args=[actual_micros, self.ttl_s]))

    def set_cap(self, scope: str, cap_micros: int) -> None:
        """A hard cap on what the scope may spend (kept as long as a replay's records)."""
        self.client.set(self.scope_key(scope) + ":cap", cap_micros, ex=30 * 24 * 3600)

    def scope_spent(self, scope: str) -> int:
        """Spent plus reserved in the scope (micro-dollars)."""
        value = self.client.get(self.scope_key(scope))
        return int(value) if value is not None else 0

    def spent(self, tenant: str, day: str | None = None) -> int:
        """Spent plus reserved today (micro-dollars)."""
        value = self.client.get(self._keys(tenant, "-", "-", day)[0])
        return int(value) if value is not None else 0

    def ticket_spent(self, ticket: str) -> int:
        value = self.client.get(f"{self.key_prefix}budget:ticket:{ticket}")
        return int(value) if value is not None else 0


def _today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")
