"""The gateway's admission on a real Redis: the tenant's rate limit and the pending mark in one
round trip; a request over the rate is not marked, and a mark never overwrites a resolution."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio as aioredis

from pipeline.gateway.status import TICKET_TTL_S, TicketStatus
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


def test_admit_counts_the_request_and_marks_it_pending_or_neither(live_services: Settings) -> None:
    async def scenario() -> None:
        client: aioredis.Redis[bytes] = aioredis.Redis.from_url(live_services.redis_location())
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        status = TicketStatus(client, prefix)
        try:
            # a burst of 3 at 1 request/s: admitted and marked until the bucket is empty (GCRA's
            # tolerance lets burst + 1 through at once), then a wait of about a second, unmarked
            waits = [await status.admit("acme", f"T-{i}", 1_000 + i, rate_per_s=1.0, burst=3) for i in range(6)]
            admitted = waits.index(next(w for w in waits if w > 0))
            assert admitted in (3, 4) and all(w > 0 for w in waits[admitted:]), waits
            assert 0.5 < waits[admitted] <= 1.0
            for i in range(admitted):
                assert await status.get("acme", f"T-{i}") == {"ticket_id": f"T-{i}", "status": "pending",
                                                               "submitted_at": 1_000 + i}
                assert 0 < await client.ttl(f"{prefix}gateway:ticket:acme:T-{i}") <= TICKET_TTL_S
            for i in range(admitted, 6):
                assert await status.get("acme", f"T-{i}") is None  # rejected: not marked
            # another tenant has a bucket of its own
            assert await status.admit("globex", "T-5", 2_000, rate_per_s=1.0, burst=3) == 0.0
            # a resolution written by the fan-out is never turned back into pending
            await client.set(f"{prefix}gateway:ticket:acme:T-9", json.dumps({"status": "resolved"}))
            await asyncio.sleep(1.2)
            assert await status.admit("acme", "T-9", 3_000, rate_per_s=1.0, burst=3) == 0.0
            assert await status.get("acme", "T-9") == {"status": "resolved"}
        finally:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()  # type: ignore[attr-defined]  # types-redis lags redis 5

    asyncio.run(scenario())
