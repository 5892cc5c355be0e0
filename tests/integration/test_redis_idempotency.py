"""Idempotency claims on a real Redis, under concurrency."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from pipeline.adapters.redis_idempotency import RedisIdempotencyStore
from pipeline.errors import TransientError
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


def test_one_origin_wins_among_concurrent_claims(live_services: Settings) -> None:
    client = redis.Redis.from_url(live_services.redis_location())
    key = f"test:idem:{uuid.uuid4()}"
    winners: list[str] = []
    barrier = threading.Barrier(16)

    def claim(origin: str) -> None:
        store = RedisIdempotencyStore(redis.Redis.from_url(live_services.redis_location()), ttl_s=60)
        barrier.wait()
        if store.claim(key, origin):
            winners.append(origin)

    threads = [threading.Thread(target=claim, args=(f"o{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    store = RedisIdempotencyStore(client, ttl_s=60)
    assert store.claim(key, winners[0])  # the same delivery again (replay after a crash)
    assert not store.claim(key, "someone-else")
    assert 0 < client.ttl(key) <= 60


def test_unreachable_redis_is_a_transient_error() -> None:
    store = RedisIdempotencyStore(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=60)
    with pytest.raises(TransientError):
        store.claim("k", "o")
