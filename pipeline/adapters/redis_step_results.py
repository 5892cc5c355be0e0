"""LLM results recorded under their step id before the step's output is committed.

A step that runs again (a crash before its transaction committed, a rebalance) finds the
result here and reuses it instead of calling (and paying) the provider again.
"""

from __future__ import annotations

import redis

from pipeline.faults import adapter
from pipeline.llm.types import LLMResponse, response_from_json, response_to_json


@adapter("redis")
class RedisStepResults:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s

    def _key(self, call_key: str) -> str:
        return f"{self.key_prefix}llm:{call_key}"

    def get(self, call_key: str) -> LLMResponse | None:
        raw = self.client.get(self._key(call_key))
        if raw is None:
            return None
        return response_from_json(raw)

    def claim(self, call_key: str, owner: str, ttl_s: float) -> bool:
        """Take the right to call the provider for ``call_key`` for ``ttl_s`` seconds; False
        while another owner holds it (the same step running elsewhere, e.g. across a rebalance)."""
        return bool(self.client.set(f"{self._key(call_key)}:lease", owner, nx=True, px=int(ttl_s * 1000)))

    def renew(self, call_key: str, owner: str, ttl_s: float) -> None:
        """Extend this owner's lease (before each attempt), so that a lease outlives no more
        than one attempt of a crashed owner."""
        key = f"{self._key(call_key)}:lease"
        if self.client.get(key) == owner.encode():
            self.client.pexpire(key, int(ttl_s * 1000))

    def release(self, call_key: str) -> None:
        self.client.delete(f"{self._key(call_key)}:lease")

    def put(self, call_key: str, response: LLMResponse) -> LLMResponse:
        """Record ``response`` unless one is recorded already; returns the recorded one."""
        if self.client.set(self._key(call_key), response_to_json(response), nx=True, ex=self.ttl_s):
            return response
        return self.get(call_key) or response
