"""Idempotency claims in Redis: one atomic script, so concurrent workers cannot both win."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from pipeline.errors import TransientError
from pipeline.faults import adapter

# Returns 1 when ARGV[1] (the origin) owns the key: it set it now, or set it before.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return 1
end
if current == ARGV[1] then return 1 end
return 0
"""


@adapter("redis")
class RedisIdempotencyStore:
    """``claim`` as specified by :class:`pipeline.processing.IdempotencyStore`.

    Keys expire after ``ttl_s`` (TICKETFLOW_IDEMPOTENCY_TTL_S, 7 days): a ticket id may be
    reused after that.
    """

    def __init__(self, client: redis.Redis[bytes], ttl_s: int) -> None:
        self._client = client
        self._script = client.register_script(_CLAIM)
        self._ttl_s = ttl_s

    def claim(self, key: str, origin: str) -> bool:
        return self.claim_many([(key, origin)])[0]

    def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        """One pipelined round trip for a whole batch (each claim stays atomic)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, origin in claims:
                self._script(keys=[key], args=[origin, self._ttl_s], client=pipe)
            return [bool(result) for result in pipe.execute()]
        except redis.RedisError as exc:
            raise TransientError(f"redis idempotency claim failed: {exc}", "redis") from exc
