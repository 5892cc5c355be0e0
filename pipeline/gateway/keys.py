"""API keys: the only source of a request's tenant.

A key is shown once, when it is created (``ticketflow keys create --tenant T``); Redis keeps
its SHA-256 only (a leaked Redis dump does not leak usable keys), under an id (its first 8
characters, shown by ``keys list`` and used by ``keys revoke``). A gateway remembers a
lookup for ``cache_s`` seconds, so a revocation takes effect within that time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from processors.intake import TENANT_ID

KEY_PREFIX = "tf_"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    tenant: str
    created_at: int
    revoked_at: int | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create, list and revoke keys (the CLI's side, synchronous)."""

    def __init__(self, client: redis.Redis[bytes], key_prefix: str) -> None:
        self.client = client
        self.hash_key = f"{key_prefix}gateway:keys"

    def create(self, tenant: str) -> tuple[str, KeyInfo]:
        if not TENANT_ID.fullmatch(tenant):
            raise ValueError(f"tenant {tenant[:40]!r} must be 1-64 characters of [A-Za-z0-9._-]")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        info = KeyInfo(key[:len(KEY_PREFIX) + 8], tenant, int(time.time() * 1000))
        self.client.hset(self.hash_key, digest(key), json.dumps(info.__dict__))
        return key, info

    def list(self) -> list[KeyInfo]:
        return sorted((KeyInfo(**json.loads(raw)) for raw in self.client.hvals(self.hash_key)),
                      key=lambda k: (k.tenant, k.created_at))

    def revoke(self, key_id: str) -> KeyInfo | None:
        for field, raw in self.client.hgetall(self.hash_key).items():
            info = KeyInfo(**json.loads(raw))
            if info.key_id == key_id and info.revoked_at is None:
                revoked = KeyInfo(info.key_id, info.tenant, info.created_at, int(time.time() * 1000))
                self.client.hset(self.hash_key, field, json.dumps(revoked.__dict__))
                return revoked
        return None


class KeyLookup:
    """The gateway's side: the tenant of a presented key (None: unknown or revoked)."""

    def __init__(self, client: aioredis.Redis[bytes], key_prefix: str, cache_s: float = 5.0) -> None:
        self.client = client
        self.hash_key = f"{key_prefix}gateway:keys"
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def tenant(self, key: str) -> str | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        hashed = digest(key)
        hit = self._cache.get(hashed)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        raw = await self.client.hget(self.hash_key, hashed)
        tenant = None
        if raw is not None:
            info = KeyInfo(**json.loads(raw))
            tenant = info.tenant if info.revoked_at is None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[hashed] = (now, tenant)
        return tenant
