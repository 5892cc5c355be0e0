"""Which Batch API job each batch-lane call went into (see :mod:`pipeline.llm.batch`).

``batch:req:<request id>`` -> job key, written before the job is created; ``batch:job:<job
key>`` -> the provider's batch id, written once the provider returned it. Both outlive any
completion window (OpenAI's is 24 h) by a day.
"""

from __future__ import annotations

import redis

from pipeline.faults import adapter


@adapter("redis")
class RedisBatchJobs:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 2 * 24 * 3600) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s

    def job_of(self, request_id: str) -> str | None:
        raw = self.client.get(f"{self.key_prefix}batch:req:{request_id}")
        return raw.decode() if raw is not None else None

    def assign(self, request_ids: list[str], job_key: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            for rid in request_ids:
                pipe.set(f"{self.key_prefix}batch:req:{rid}", job_key, ex=self.ttl_s)
            pipe.execute()

    def batch_of(self, job_key: str) -> str | None:
        raw = self.client.get(f"{self.key_prefix}batch:job:{job_key}")
        return raw.decode() if raw is not None else None

    def set_batch(self, job_key: str, batch_id: str) -> None:
        self.client.set(f"{self.key_prefix}batch:job:{job_key}", batch_id, ex=self.ttl_s)
