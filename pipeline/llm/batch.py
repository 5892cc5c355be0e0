"""Batch-lane LLM calls through a provider's Batch API (OpenAI's ``/v1/batches``), at its price.

A provider's Batch API takes a file of requests, answers them within a completion window
(OpenAI: 24 h) and bills them at half the price. On the batch lane, where nobody waits for
an answer, that halves the cost of a backfill. :class:`BatchCollector` gathers the batch
lane's calls on the agent's event loop for up to ``max_wait_s`` (or ``max_lines``), submits
them as one job, polls it, and answers each call from the job's output or error file
(matched by ``custom_id``, the call's request id, in whatever order the lines come).

Exactly once across crashes. Before a job is created, each of its calls is assigned to a
job key in Redis (:class:`BatchJobs`); the job is created with that key in its metadata, and
its batch id is stored under the key once the provider returns it. A worker that restarts
runs the same step again, with the same request id, and finds the key: it polls the job
already submitted (found by its stored id, or, if the crash came between creating the job
and storing its id, by the key in the provider's job list) instead of submitting it again.
The reply is recorded under the call like any other (the step-results store), so its cost
is accounted once, when the job reached its terminal state.

A line the job failed (error file), or left unanswered (expired or cancelled with partial
output), raises :class:`~pipeline.llm.types.ProviderUnavailable` for that call alone: the
runner retries it as a new attempt (a new request id, so a new job line), within the same
budget and breaker as any call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.llm.types import (
    ChatMessage,
    LLMRequest,
    LLMResponse,
    MalformedOutput,
    ProviderUnavailable,
    ToolDefinition,
)

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchLine:
    custom_id: str  # the call's request id
    request: LLMRequest


@dataclass
class BatchState:
    """A job as the provider reports it; ``results`` and ``errors`` are keyed by custom_id."""

    batch_id: str
    status: str
    results: dict[str, LLMResponse] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class BatchAPI(Protocol):
    name: str

    async def submit_batch(self, lines: list[BatchLine], job_key: str) -> str:
        """Create a job of ``lines`` tagged with ``job_key``; its batch id."""
        ...

    async def find_batch(self, job_key: str) -> str | None:
        """The batch id of a job created with ``job_key`` (None: never created)."""
        ...

    async def batch_state(self, batch_id: str) -> BatchState: ...


class BatchJobs(Protocol):
    """Where calls are assigned to jobs and jobs to batch ids (Redis)."""

    def job_of(self, request_id: str) -> str | None: ...

    def assign(self, request_ids: list[str], job_key: str) -> None: ...

    def batch_of(self, job_key: str) -> str | None: ...

    def set_batch(self, job_key: str, batch_id: str) -> None: ...


def request_body(request: LLMRequest) -> dict[str, Any]:
    """A request as data (a job line, or the simulated provider's stored job)."""
    return dataclasses.asdict(request)


def request_from_body(body: dict[str, Any]) -> LLMRequest:
    values = dict(body)
    values["messages"] = tuple(ChatMessage(**m) for m in body.get("messages", ()))
    values["tools"] = tuple(ToolDefinition(**t) for t in body.get("tools", ()))
    return LLMRequest(**values)


def checked_reply(response: LLMResponse) -> LLMResponse:
    """A job line's reply as a streamed one is checked: tool-call arguments must be JSON
    (served and billed either way: the workflow rejects a malformed one)."""
    for call in response.tool_calls:
        try:
            json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise MalformedOutput(f"tool call {call.name} has arguments that are not JSON: {exc}", response) from exc
    return response


class BatchCollector:
    """Gathers batch-lane calls into jobs, and answers each call from its job."""

    def __init__(self, api: BatchAPI, jobs: BatchJobs, io: Callable[..., Awaitable[Any]],
                 max_lines: int = 500, max_wait_s: float = 2.0, poll_s: float = 5.0) -> None:
        self.api = api
        self.jobs = jobs
        self.io = io  # runs a blocking (Redis) call off the event loop
        self.max_lines = max_lines
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self._pending: list[tuple[BatchLine, asyncio.Future[LLMResponse]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, dict[str, list[asyncio.Future[LLMResponse]]]] = {}  # batch -> rid -> futures
        self.submitted_jobs = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        rid = request.request_id
        job = await self.io(self.jobs.job_of, rid)
        future: asyncio.Future[LLMResponse] = asyncio.get_running_loop().create_future()
        if job is not None:
            batch_id = await self.io(self.jobs.batch_of, job) or await self.api.find_batch(job)
            if batch_id is not None:
                log.info("call %s: polling batch %s submitted before a restart", rid, batch_id)
                await self.io(self.jobs.set_batch, job, batch_id)
                self._watch(batch_id, {rid: [future]})
                return await future
            # assigned, but the job was never created (a crash in between): submit it now
        self._pending.append((BatchLine(rid, request), future))
        if len(self._pending) >= self.max_lines:
            self._flush_now()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.max_wait_s)
        self._flusher = None
        self._flush_now()

    def _flush_now(self) -> None:
        lines, self._pending = self._pending, []
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if lines:
            asyncio.get_running_loop().create_task(self._submit(lines))

    async def _submit(self, lines: list[tuple[BatchLine, asyncio.Future[LLMResponse]]]) -> None:
        job = f"job-{uuid.uuid4().hex}"
        try:
            await self.io(self.jobs.assign, [line.custom_id for line, _ in lines], job)
            batch_id = await self.api.submit_batch([line for line, _ in lines], job)
            self.submitted_jobs += 1
            await self.io(self.jobs.set_batch, job, batch_id)
        except Exception as exc:  # the calls fail as a unit and are retried by the runner
            error = exc if isinstance(exc, ProviderUnavailable) else ProviderUnavailable(
                f"batch job not submitted: {type(exc).__name__}: {exc}")
            for _, future in lines:
                if not future.done():
                    future.set_exception(error)
            return
        log.info("batch %s submitted: %d calls (job %s)", batch_id, len(lines), job)
        waiting: dict[str, list[asyncio.Future[LLMResponse]]] = {}
        for line, future in lines:
            waiting.setdefault(line.custom_id, []).append(future)
        self._watch(batch_id, waiting)

    def _watch(self, batch_id: str, waiting: dict[str, list[asyncio.Future[LLMResponse]]]) -> None:
        known = self._waiting.setdefault(batch_id, {})
        for rid, futures in waiting.items():
            known.setdefault(rid, []).extend(futures)
        if batch_id not in self._watchers:
            self._watchers[batch_id] = asyncio.get_running_loop().create_task(self._poll(batch_id))

    async def _poll(self, batch_id: str) -> None:
        started = time.monotonic()
        state: BatchState | None = None
        while True:
            try:
                state = await self.api.batch_state(batch_id)
            except Exception as exc:  # the provider's status endpoint is down: ask again later
                log.warning("batch %s: status unavailable (%s)", batch_id, exc)
            if state is not None and state.terminal:
                break
            await asyncio.sleep(self.poll_s)
        self._watchers.pop(batch_id, None)
        waiting = self._waiting.pop(batch_id, {})
        log.info("batch %s %s after %.1f s: %d answered, %d failed", batch_id, state.status,
                 time.monotonic() - started, len(state.results), len(state.errors))
        for rid, futures in waiting.items():
            for future in futures:
                if future.done():
                    continue
                if rid in state.results:
                    reply = state.results[rid]
                    future.set_result(dataclasses.replace(reply, extra={**reply.extra, "batch_id": batch_id}))
                else:
                    why = state.errors.get(rid) or f"no output line (batch {state.status})"
                    future.set_exception(ProviderUnavailable(f"batch {batch_id}: {rid}: {why}"))
