"""Knowledge-base versions per tenant in Redis, read through a short local cache."""

from __future__ import annotations

import threading
import time

import redis

from pipeline.cache.semantic_cache import DEFAULT_KB_VERSION
from pipeline.faults import adapter


@adapter("redis")
class RedisKbVersions:
    """``current`` is at most ``refresh_s`` stale in a worker; ``set`` is seen by all at once after that."""

    def __init__(self, client: redis.Redis[bytes], key_prefix: str, refresh_s: float = 1.0) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.refresh_s = refresh_s
        self._seen: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def _key(self, tenant: str) -> str:
        return f"{self.key_prefix}kb:{tenant}"

    def current(self, tenant: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._seen.get(tenant)
        if cached is not None and now - cached[0] < self.refresh_s:
            return cached[1]
        value = self.client.get(self._key(tenant))
        version = value.decode() if isinstance(value, bytes) else (value or DEFAULT_KB_VERSION)
        with self._lock:
            self._seen[tenant] = (now, version)
        return version

    def set(self, tenant: str, version: str) -> None:
        self.client.set(self._key(tenant), version)
        with self._lock:
            self._seen.pop(tenant, None)
