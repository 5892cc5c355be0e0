"""Windowed usage aggregates in Redis, counted once per usage record.

Each ``UsageRecord`` adds to the aggregates of its tenant, workflow, step and model for the
window its ``occurred_at`` falls in, in one Lua script that first adds the record id to the
window's set of seen ids: a record delivered again (a replayed batch) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from pipeline.events import UsageRecord
from pipeline.faults import adapter

_APPLY = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'llm_calls', ARGV[3])
  redis.call('HINCRBY', KEYS[i], 'tokens_in', ARGV[4])
  redis.call('HINCRBY', KEYS[i], 'tokens_out', ARGV[5])
  redis.call('HINCRBY', KEYS[i], 'tokens_cached', ARGV[6])
  redis.call('HINCRBY', KEYS[i], 'cost_micros', ARGV[7])
  redis.call('HINCRBY', KEYS[i], 'model:' .. ARGV[8], ARGV[7])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 1
"""


@dataclass(frozen=True)
class Aggregate:
    tenant: str
    scope: str  # tenant, workflow, step, model
    key: str
    window_start: int


@adapter("redis")
class RedisCostWindows:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, window_ms: int = 60_000,
                 ttl_s: int = 3 * 24 * 3600) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.window_ms = window_ms
        self.ttl_s = ttl_s
        self._apply = client.register_script(_APPLY)

    def _hash(self, a: Aggregate) -> str:
        return f"{self.key_prefix}cost:{a.tenant}:{a.window_start}:{a.scope}:{a.key}"

    def aggregates(self, record: UsageRecord) -> list[Aggregate]:
        start = record.occurred_at - record.occurred_at % self.window_ms
        step = record.step.rsplit(":", 1)[-1] if record.kind == "llm" else record.step
        return [Aggregate(record.tenant_id, "tenant", record.tenant_id, start),
                Aggregate(record.tenant_id, "workflow", record.workflow, start),
                Aggregate(record.tenant_id, "step", f"{record.workflow}:{step}", start),
                Aggregate(record.tenant_id, "model", f"{record.kind}:{record.model}", start)]

    def apply(self, record: UsageRecord) -> list[Aggregate]:
        """Count ``record`` once; returns the aggregates it belongs to."""
        touched = self.aggregates(record)
        window = touched[0].window_start
        seen = f"{self.key_prefix}cost:{record.tenant_id}:{window}:seen"
        served = 1 if record.kind == "llm" and record.outcome == "ok" else 0
        self._apply(keys=[seen, *(self._hash(a) for a in touched)],
                    args=[record.record_id, self.ttl_s, served, record.tokens_in, record.tokens_out,
                          record.tokens_cached, record.cost_micros, record.model])
        return touched

    def read(self, aggregate: Aggregate) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self._hash(aggregate)).items()}
