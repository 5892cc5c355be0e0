"""Tool results cached in real Redis: a hit avoids the call; an invalidation brings it back."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.adapters.redis_tool_cache import RedisToolCache
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from tests.unit.test_tool_registry import CARD_STATUS, REFUND


def test_cached_until_the_data_changes(live_services: Settings) -> None:
    cache = RedisToolCache(redis_client(live_services), f"test-{uuid.uuid4().hex[:8]}:", ttl_s=60)
    calls: list[dict[str, Any]] = []

    def card_status(args: dict[str, Any]) -> dict[str, Any]:
        calls.append(args)
        return {"status": "shipped", "call": len(calls)}

    def lookup(tenant: str, args: dict[str, Any]) -> dict[str, Any]:
        cached = cache.get(tenant, CARD_STATUS, args)
        if cached is not None:
            return cached
        result = card_status(args)
        cache.put(tenant, CARD_STATUS, args, result)
        return result

    args = {"customer_id": "c-1"}
    assert lookup("acme", args) == lookup("acme", {**args}) == {"status": "shipped", "call": 1}
    assert len(calls) == 1  # the second lookup did not reach the tool
    assert lookup("globex", args)["call"] == 2  # per tenant
    assert cache.invalidate("acme", "cards") == 1
    assert lookup("acme", args)["call"] == 3  # the data changed: the tool runs again
    assert len(calls) == 3


def test_side_effecting_results_are_never_cached(live_services: Settings) -> None:
    cache = RedisToolCache(redis_client(live_services), f"test-{uuid.uuid4().hex[:8]}:", ttl_s=60)
    args = {"transfer_id": "TR-1", "amount_cents": 500}
    cache.put("acme", REFUND, args, {"refunded": True})
    assert cache.get("acme", REFUND, args) is None
