"""The cache audit's ledger and the tenants' policy levels in Redis.

One hash per tenant holds ``audited``, ``agreed``, ``level`` and ``tightened_at``; an audit
counts once (a Lua script adds the audit ticket's id to a set first, so a redelivered record
changes nothing). Every level change is appended to the tenant's history list with its
reason, so that a tightening is recorded and can be reviewed and reversed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from pipeline.cache.audit import AuditState
from pipeline.errors import TransientError
from pipeline.faults import adapter

T = TypeVar("T")

_RECORD = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'audited', 1)
  redis.call('HINCRBY', KEYS[1], 'agreed', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'audited', 'agreed', 'level', 'tightened_at')
"""


def _transient(call: Callable[[], T]) -> T:
    try:
        return call()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise TransientError(f"redis unavailable for the cache audit: {exc}", "redis") from exc


def _state(values: list[bytes | None]) -> AuditState:
    audited, agreed, level, tightened_at = (int(v) if v is not None else 0 for v in values)
    return AuditState(audited, agreed, level, tightened_at)


@adapter("redis")
class RedisAuditLedger:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._record = client.register_script(_RECORD)

    def _hash(self, tenant: str) -> str:
        return f"{self.key_prefix}audit:{tenant}"

    def _seen(self, tenant: str) -> str:
        return f"{self.key_prefix}audit-seen:{tenant}"

    def _history(self, tenant: str) -> str:
        return f"{self.key_prefix}audit-history:{tenant}"

    def record(self, tenant: str, audit_id: str, agreed: bool) -> AuditState:
        """Count one audit (once per ``audit_id``); the tenant's state after it."""
        values = _transient(lambda: self._record(keys=[self._hash(tenant), self._seen(tenant)],
                                                 args=[audit_id, int(agreed)]))
        return _state(list(values))

    def state(self, tenant: str) -> AuditState:
        values = _transient(lambda: self.client.hmget(self._hash(tenant), "audited", "agreed", "level",
                                                      "tightened_at"))
        return _state(list(values))

    def set_level(self, tenant: str, level: int, reason: str, at_audited: int | None = None) -> None:
        entry = json.dumps({"at": int(time.time() * 1000), "level": level, "reason": reason})

        def write() -> None:
            pipe = self.client.pipeline()
            pipe.hset(self._hash(tenant), "level", level)
            if at_audited is not None:
                pipe.hset(self._hash(tenant), "tightened_at", at_audited)
            pipe.rpush(self._history(tenant), entry)
            pipe.execute()

        _transient(write)

    def history(self, tenant: str) -> list[dict[str, object]]:
        raw = _transient(lambda: self.client.lrange(self._history(tenant), 0, -1))
        return [json.loads(item) for item in raw]

    def reset(self, tenant: str, counts: bool = False, reason: str = "reset") -> None:
        """Back to the calibrated policy (level 0); with ``counts``, forget the audits too."""
        if counts:
            _transient(lambda: self.client.delete(self._hash(tenant), self._seen(tenant)))
            self.set_level(tenant, 0, reason, 0)
        else:
            self.set_level(tenant, 0, reason)


@adapter("redis")
class RedisPolicyLevels:
    """``level`` is at most ``refresh_s`` stale in a worker. While Redis is unreachable the last
    level read stands (a lookup must not fail because the ledger is down)."""

    def __init__(self, client: redis.Redis[bytes], key_prefix: str, refresh_s: float = 1.0) -> None:
        self.ledger = RedisAuditLedger(client, key_prefix)
        self.refresh_s = refresh_s
        self._seen: dict[str, tuple[float, AuditState]] = {}
        self._lock = threading.Lock()

    def state(self, tenant: str) -> AuditState:
        now = time.monotonic()
        with self._lock:
            cached = self._seen.get(tenant)
        if cached is not None and now - cached[0] < self.refresh_s:
            return cached[1]
        try:
            state = self.ledger.state(tenant)
        except TransientError:
            if cached is None:
                raise
            return cached[1]
        with self._lock:
            self._seen[tenant] = (now, state)
        return state

    def level(self, tenant: str) -> int:
        return self.state(tenant).level
