"""Cached results of deterministic tools in Redis, per tenant, tool, arguments and data version.

The data version of a (tenant, data source) pair is a counter in Redis: an invalidation
event increments it, so every result cached under the old version becomes unreachable at
once (and expires with its TTL). Side-effecting tools never reach this cache.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from pipeline.faults import adapter
from pipeline.tools.registry import ToolSpec, arguments_digest


@adapter("redis")
class RedisToolCache:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 300) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s

    def _version_key(self, tenant: str, source: str) -> str:
        return f"{self.key_prefix}toolver:{tenant}:{source}"

    def data_version(self, tenant: str, source: str | None) -> int:
        if source is None:
            return 0
        value = self.client.get(self._version_key(tenant, source))
        return int(value) if value is not None else 0

    def _key(self, tenant: str, spec: ToolSpec, arguments: Mapping[str, Any]) -> str:
        version = self.data_version(tenant, spec.data_source)
        return f"{self.key_prefix}tool:{tenant}:{spec.name}:{version}:{arguments_digest(arguments)}"

    def get(self, tenant: str, spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
        if not spec.deterministic or spec.side_effecting:
            return None
        raw = self.client.get(self._key(tenant, spec, arguments))
        if raw is None:
            return None
        result: dict[str, Any] = json.loads(raw)
        return result

    def put(self, tenant: str, spec: ToolSpec, arguments: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        if not spec.deterministic or spec.side_effecting:
            return
        self.client.set(self._key(tenant, spec, arguments), json.dumps(result, sort_keys=True), ex=self.ttl_s)

    def invalidate(self, tenant: str, source: str) -> int:
        """The data behind ``source`` changed for ``tenant``: returns the new data version."""
        return int(self.client.incr(self._version_key(tenant, source)))
