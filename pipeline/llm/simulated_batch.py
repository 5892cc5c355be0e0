"""The simulated provider's Batch API: jobs in Redis, answered after a completion window.

Jobs live in Redis (not in a worker's memory) as a provider's do: a worker that restarts
polls the job it submitted before. A job is ``in_progress`` until its completion window
(``TICKETFLOW_SIM_BATCH_WINDOW_S``, scaled by the time-scale setting) has passed; then every
line is answered as :meth:`SimulatedProvider.decide` answers it (deterministic, so any
worker computes the same output file), except a ``fault_rate`` share of lines that fail
(the error file). The job is billed once, line by line, the first time it is seen complete.
``submissions(request_id)`` counts how often a call was put into a job (tests: never twice).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis

from pipeline.llm.batch import BatchLine, BatchState, request_body, request_from_body
from pipeline.llm.simulated import SimulatedProvider
from pipeline.llm.tokens import count_tokens
from pipeline.llm.types import LLMResponse, ProviderUnavailable, response_to_json

T = TypeVar("T")


class SimulatedBatches:
    def __init__(self, provider: SimulatedProvider, client: redis.Redis[bytes], key_prefix: str,
                 window_s: float = 60.0, ttl_s: int = 2 * 24 * 3600) -> None:
        self.provider = provider
        self.name = provider.name
        self.client = client
        self.key_prefix = key_prefix
        self.window_s = window_s * provider.time_scale
        self.ttl_s = ttl_s

    def _key(self, *parts: str) -> str:
        return f"{self.key_prefix}simbatch:" + ":".join(parts)

    # The provider's side of the API: its storage failing is the provider failing.
    async def submit_batch(self, lines: list[BatchLine], job_key: str) -> str:
        return await self._provider_call(self._submit, lines, job_key)

    async def find_batch(self, job_key: str) -> str | None:
        return await self._provider_call(self._find, job_key)

    async def batch_state(self, batch_id: str) -> BatchState:
        return await self._provider_call(self._state, batch_id)

    async def _provider_call(self, function: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.to_thread(function, *args)  # Redis off the agent's event loop
        except redis.RedisError as exc:
            raise ProviderUnavailable(f"simulated Batch API unavailable: {exc}") from exc

    def _submit(self, lines: list[BatchLine], job_key: str) -> str:
        batch_id = f"batch_{uuid.uuid4().hex[:20]}"
        job = {"created_ms": int(time.time() * 1000), "job": job_key,
               "lines": [{"custom_id": line.custom_id, "body": request_body(line.request)} for line in lines]}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._key("job", batch_id), json.dumps(job), ex=self.ttl_s)
            pipe.set(self._key("key", job_key), batch_id, ex=self.ttl_s)
            for line in lines:
                pipe.incr(self._key("submitted", line.custom_id))
                pipe.expire(self._key("submitted", line.custom_id), self.ttl_s)
            pipe.execute()
        return batch_id

    def _find(self, job_key: str) -> str | None:
        raw = self.client.get(self._key("key", job_key))
        return raw.decode() if raw is not None else None

    def _state(self, batch_id: str) -> BatchState:
        raw = self.client.get(self._key("job", batch_id))
        if raw is None:
            raise ProviderUnavailable(f"no batch {batch_id} (404)")
        job = json.loads(raw)
        elapsed_ms = int(time.time() * 1000) - job["created_ms"]
        if elapsed_ms < self.window_s * 1000:
            return BatchState(batch_id, "in_progress")
        state = BatchState(batch_id, "completed")
        for line in job["lines"]:
            rid = line["custom_id"]
            request = request_from_body(line["body"])
            if random.Random(f"{self.provider.seed}:batchfault:{rid}").random() < self.provider.fault_rate:
                state.errors[rid] = "500 server_error (simulated failed line)"
                continue
            text, calls, extra = self.provider.decide(request)
            tokens_in, _ = self.provider.count_input(request)  # no prompt cache across a job's lines
            tokens_out = max(1, count_tokens(text + "".join(c.name + c.arguments for c in calls)))
            state.results[rid] = LLMResponse(model=request.model, provider=self.name, text=text, tool_calls=calls,
                                             tokens_in=tokens_in, tokens_out=tokens_out, ttft_ms=float(elapsed_ms),
                                             latency_ms=float(elapsed_ms), extra=extra)
        if self.client.set(self._key("billed", batch_id), 1, nx=True, ex=self.ttl_s):
            for rid, reply in state.results.items():
                self.provider.billing.add(reply.model, rid, response_to_json(reply))
        return state

    def submissions(self, request_id: str) -> int:
        raw = self.client.get(self._key("submitted", request_id))
        return int(raw) if raw is not None else 0
