"""The agent's bookkeeping around an LLM call (results, leases, budgets, rate limits), off the
event loop and patient with its dependency.

The stores behind it are synchronous clients (Redis): every call runs in a small thread
pool, so a slow or unreachable Redis never blocks the event loop that carries hundreds of
agent steps. Before a call goes out, a transient failure of a store fails the step (nothing
was spent; the runtime waits for the dependency and runs the step again). After the
provider has served a call it is paid for: recording the reply and settling its
reservation then wait for the store, however long it is down, so that a served reply is
never lost to an outage (and never bought twice) and the budgets stay exact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from pipeline.errors import TransientError
from pipeline.llm.types import LLMResponse

log = logging.getLogger(__name__)
T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ticketflow-agent-io")


class StepResults(Protocol):
    def get(self, call_key: str) -> LLMResponse | None: ...

    def put(self, call_key: str, response: LLMResponse) -> LLMResponse: ...

    def claim(self, call_key: str, owner: str, ttl_s: float) -> bool: ...

    def renew(self, call_key: str, owner: str, ttl_s: float) -> None: ...

    def release(self, call_key: str) -> None: ...


class Budgets(Protocol):
    def reserve(self, tenant: str, ticket: str, reservation: str, amount_micros: int, tenant_limit: int,
                ticket_limit: int, scope: str | None = None) -> object: ...

    def settle(self, tenant: str, ticket: str, reservation: str, actual_micros: int) -> bool: ...


class RateLimiter(Protocol):
    def acquire(self, provider: str, model: str) -> float: ...


class CallLedger:
    def __init__(self, store: StepResults, budgets: Budgets, sleep: Callable[[float], Awaitable[None]],
                 max_wait_step_s: float = 2.0) -> None:
        self.store = store
        self.budgets = budgets
        self.sleep = sleep
        self.max_wait_step_s = max_wait_step_s

    async def io(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the I/O pool (never on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(function, *args))

    async def patiently(self, what: str, function: Callable[..., T], *args: object) -> T:
        """``function(*args)``, retried while its store is transiently down (backoff capped at
        ``max_wait_step_s``): for the bookkeeping of a call that was already paid for."""
        delay = 0.05
        waited = 0.0
        while True:
            try:
                return await self.io(function, *args)
            except TransientError as exc:
                if waited == 0.0:
                    log.debug("%s waits for its store: %s", what, exc)  # the runtime logs the outage once
                await self.sleep(delay)
                waited += delay
                delay = min(self.max_wait_step_s, delay * 2)

    async def recorded_or_claim(self, call_key: str, owner: str, lease_s: float) -> LLMResponse | None:
        """The recorded result, or None once ``owner`` holds the call's lease. While another
        runner holds it (the same step elsewhere), wait for its result instead of calling."""
        while True:
            recorded, claimed = await self.io(self._get_or_claim, call_key, owner, lease_s)
            if recorded is not None or claimed:
                return recorded
            await self.sleep(0.05)

    def _get_or_claim(self, call_key: str, owner: str, lease_s: float) -> tuple[LLMResponse | None, bool]:
        recorded = self.store.get(call_key)
        if recorded is not None:
            return recorded, False
        if self.store.claim(call_key, owner, lease_s):
            return self.store.get(call_key), True  # recorded between the two reads
        return None, False

    async def begin_attempt(self, call_key: str, owner: str, lease_s: float, tenant: str, ticket: str,
                            reservation: str, amount: int, tenant_limit: int, ticket_limit: int,
                            scope: str | None = None) -> object:
        """Renew the lease (it outlives no more than one attempt of a crashed owner) and reserve
        the attempt's worst-case cost (in a replay's ``scope`` too): one trip to the pool."""
        return await self.io(self._begin_attempt, call_key, owner, lease_s, tenant, ticket, reservation, amount,
                             tenant_limit, ticket_limit, scope)

    def _begin_attempt(self, call_key: str, owner: str, lease_s: float, tenant: str, ticket: str,
                       reservation: str, amount: int, tenant_limit: int, ticket_limit: int,
                       scope: str | None) -> object:
        self.store.renew(call_key, owner, lease_s)
        if scope is None:
            return self.budgets.reserve(tenant, ticket, reservation, amount, tenant_limit, ticket_limit)
        return self.budgets.reserve(tenant, ticket, reservation, amount, tenant_limit, ticket_limit, scope)

    async def release(self, call_key: str) -> None:
        """Best effort: an unreleased lease expires by itself."""
        try:
            await self.io(self.store.release, call_key)
        except TransientError as exc:
            log.debug("lease %s not released (%s): it expires", call_key, exc)  # the outage is logged once

    def record_now(self, call_key: str, response: LLMResponse) -> LLMResponse | None:
        """Record a reply the moment it arrives, synchronously, in the task that received it:
        the one deliberate blocking call on the event loop (one Redis round trip). A thread
        hop here let the event loop run on for milliseconds before the write (the pool
        thread waits for the GIL), and a worker killed in that window had paid for a reply
        it then lost and bought again (the kill -9 test caught it). None when the store is
        unreachable: :meth:`record` then waits for it."""
        try:
            return self.store.put(call_key, response)
        except TransientError:
            return None

    async def record(self, call_key: str, response: LLMResponse) -> LLMResponse:
        """The recorded reply (the first one recorded for the call); waits for the store
        however long it is down (the reply was paid for)."""
        return await self.patiently(f"the reply to {call_key}", self.store.put, call_key, response)

    async def settle(self, tenant: str, ticket: str, reservation: str, actual: int) -> None:
        await self.patiently(f"the settlement of {reservation}", self.budgets.settle, tenant, ticket,
                             reservation, actual)

    async def wait_for_rate(self, limiters: list[RateLimiter], provider: str, model: str) -> None:
        """Wait until every limiter admits the call, charged in order (the batch lane's share
        before the common limit): one trip to the pool per try."""
        if not limiters:
            return
        while True:
            wait = await self.io(_acquire_all, limiters, provider, model)
            if wait <= 0:
                return
            await self.sleep(min(wait, 1.0))


def _acquire_all(limiters: list[RateLimiter], provider: str, model: str) -> float:
    for limiter in limiters:
        wait = limiter.acquire(provider, model)
        if wait > 0:
            return wait
    return 0.0
