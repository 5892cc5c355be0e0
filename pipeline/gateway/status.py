"""What the gateway remembers in Redis (shared by every gateway process): the state of each
ticket it accepted, the resolution the fan-out saw, idempotency keys, and per-tenant rate
limits (GCRA, the same script as the LLM rate limiter).

Keys (under the deployment's prefix): ``gateway:ticket:<tenant>:<id>`` (JSON, 7 days),
``gateway:idem:<tenant>:<key>`` (the ticket id and a digest of the request body, 24 h),
``ratelimit:gateway:<tenant>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from pipeline.adapters.redis_rate_limit import GCRA_SCRIPT

log = logging.getLogger(__name__)
TICKET_TTL_S = 7 * 24 * 3600
IDEMPOTENCY_TTL_S = 24 * 3600

#: The tenant's rate limit (GCRA_SCRIPT's) and, when the request is admitted, the ticket's
#: pending mark, in one round trip: KEYS[1] the bucket, KEYS[2] the ticket; ARGV interval
#: (us), burst, the pending JSON, its TTL (s). Returns 0 (admitted and marked) or the wait in us.
ADMIT_SCRIPT = GCRA_SCRIPT.replace(
    "return 0\n", "redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', tonumber(ARGV[4]))\nreturn 0\n")
if ADMIT_SCRIPT.count("KEYS[2]") != 1:
    raise RuntimeError("GCRA_SCRIPT changed shape: ADMIT_SCRIPT no longer marks the ticket pending")


class TicketStatus:
    def __init__(self, client: aioredis.Redis[bytes], key_prefix: str) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._gcra = client.register_script(GCRA_SCRIPT)
        self._admit = client.register_script(ADMIT_SCRIPT)
        self._admit_sha = hashlib.sha1(ADMIT_SCRIPT.encode()).hexdigest()  # what Redis names it by

    def _key(self, tenant: str, ticket_id: str) -> str:
        return f"{self.key_prefix}gateway:ticket:{tenant}:{ticket_id}"

    async def pending(self, tenant: str, ticket_id: str, submitted_ms: int) -> None:
        """Accepted and not yet answered (never overwrites a resolution)."""
        await self.client.set(self._key(tenant, ticket_id), _pending(ticket_id, submitted_ms), nx=True,
                              ex=TICKET_TTL_S)

    async def admit(self, tenant: str, ticket_id: str, submitted_ms: int, rate_per_s: float, burst: int) -> float:
        """:meth:`rate_wait_s` and, when the request may go ahead, :meth:`pending`, in one round trip."""
        args = (self._rate_key(tenant), self._key(tenant, ticket_id), int(1_000_000 / rate_per_s), burst,
                _pending(ticket_id, submitted_ms), TICKET_TTL_S)
        try:  # EVALSHA straight away: redis-py's Script.__call__ costs more than the call on this path
            wait_us = int(await self.client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", self._admit_sha, 2, *args))
        except NoScriptError:  # a restarted or flushed Redis: load it again
            wait_us = int(await self._admit(keys=list(args[:2]), args=list(args[2:])))
        return wait_us / 1_000_000

    def _rate_key(self, tenant: str) -> str:
        return f"{self.key_prefix}ratelimit:gateway:{tenant}"

    async def forget(self, tenant: str, ticket_id: str) -> None:
        """A submission that never reached Kafka."""
        await self.client.delete(self._key(tenant, ticket_id))

    async def get(self, tenant: str, ticket_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self._key(tenant, ticket_id))
        found: dict[str, Any] | None = json.loads(raw) if raw is not None else None
        return found

    async def claim_idempotency_key(self, tenant: str, key: str, ticket_id: str,
                                    body_digest: str) -> tuple[str, str] | None:
        """Bind ``key`` to this ticket; the earlier (ticket id, body digest) when it was bound."""
        name = f"{self.key_prefix}gateway:idem:{tenant}:{key}"
        if await self.client.set(name, json.dumps([ticket_id, body_digest]), nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        raw = await self.client.get(name)
        if raw is None:  # expired between the two calls: bind it now
            await self.client.set(name, json.dumps([ticket_id, body_digest]), ex=IDEMPOTENCY_TTL_S)
            return None
        earlier, digest = json.loads(raw)
        return str(earlier), str(digest)

    async def rate_wait_s(self, tenant: str, rate_per_s: float, burst: int) -> float:
        """0 when the tenant may make a request now (and it is counted), else seconds to wait."""
        wait_us = int(await self._gcra(keys=[self._rate_key(tenant)], args=[int(1_000_000 / rate_per_s), burst]))
        return wait_us / 1_000_000


def _pending(ticket_id: str, submitted_ms: int) -> str:
    return json.dumps({"ticket_id": ticket_id, "status": "pending", "submitted_at": submitted_ms})


def resolved_writer(client: redis.Redis[bytes], key_prefix: str,
                    stop: Callable[[], bool] = lambda: False) -> Callable[[list[tuple[tuple[str, str],
                                                                                   dict[str, Any]]]], None]:
    """The fan-out thread's writer of resolutions (synchronous client, one pipeline a batch).
    While Redis is unreachable it waits (backoff up to 2 s): the fan-out stops reading, and
    waiting requests are still woken from memory."""
    def write(resolved: list[tuple[tuple[str, str], dict[str, Any]]]) -> None:
        delay = 0.05
        while True:
            pipe = client.pipeline(transaction=False)
            for (tenant, ticket_id), data in resolved:
                pipe.set(f"{key_prefix}gateway:ticket:{tenant}:{ticket_id}", json.dumps(data), ex=TICKET_TTL_S)
            try:
                pipe.execute()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if stop():
                    return
                log.warning("gateway: Redis unreachable, resolutions wait (%s)", exc)
                time.sleep(delay)
                delay = min(2.0, delay * 2)
    return write
