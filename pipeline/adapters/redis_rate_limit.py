"""A rate limiter per provider and model, shared by every worker through Redis (GCRA).

The generic cell rate algorithm keeps one timestamp per key (the theoretical arrival time),
updated in one Lua script with Redis's own clock, so all workers draw from one budget of
``rate`` calls per second with bursts up to ``burst``. ``acquire`` answers how long to wait
before the call may go out (0: now); the caller waits without blocking its event loop.
"""

from __future__ import annotations

import redis

from pipeline.faults import adapter

GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - interval * burst
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return 0
"""


@adapter("redis")
class RedisRateLimiter:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.client = client
        self.key_prefix = key_prefix
        self.interval_us = int(1_000_000 / rate_per_s)
        self.burst = burst
        self._script = client.register_script(GCRA_SCRIPT)

    def acquire(self, provider: str, model: str) -> float:
        """Seconds to wait before trying again; 0.0 when the call may go out now (and is counted)."""
        wait_us = int(self._script(keys=[f"{self.key_prefix}ratelimit:{provider}:{model}"],
                                   args=[self.interval_us, self.burst]))
        return wait_us / 1_000_000
