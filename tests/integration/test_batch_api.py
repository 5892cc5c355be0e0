"""The Batch API path against a server that speaks OpenAI's ``/v1/files`` and ``/v1/batches``
over real HTTP (tests/fault_server), through the official SDK, with the job assignments in
the real Redis: grouping, out-of-order output matched by custom_id, a failed line, expiry
and cancel with partial output, the batch price, and a restarted worker that polls the job
it submitted before instead of submitting it again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.adapters.redis_batch_jobs import RedisBatchJobs
from pipeline.llm.batch import BatchCollector, BatchLine
from pipeline.llm.openai_batch import OpenAIBatches
from pipeline.llm.openai_provider import OpenAIProvider
from pipeline.llm.pricing import PricingTable
from pipeline.llm.types import ChatMessage, LLMRequest, LLMResponse, ProviderUnavailable
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from tests.fault_server import FaultServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        running.batch_delay_s = 0.3
        yield running


async def _io(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def collector(server: FaultServer, settings: Settings, prefix: str) -> BatchCollector:
    api = OpenAIBatches(OpenAIProvider(server.url, "test-key", timeout_s=10))
    return BatchCollector(api, RedisBatchJobs(redis_client(settings), prefix), _io, max_lines=50, max_wait_s=0.2,
                          poll_s=0.1)


def request(model: str, rid: str) -> LLMRequest:
    return LLMRequest(model=model, messages=(ChatMessage("user", f"rate? ({rid})"),), request_id=rid)


def gather(batches: BatchCollector, requests: list[LLMRequest]) -> list[LLMResponse | BaseException]:
    async def run() -> list[LLMResponse | BaseException]:
        return await asyncio.gather(*(batches.complete(r) for r in requests), return_exceptions=True)
    return asyncio.run(run())


def test_calls_gather_into_one_job_matched_by_custom_id_with_a_failed_line(server: FaultServer,
                                                                         live_services: Settings) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    batches = collector(server, live_services, prefix)
    requests = [request("ok-model", f"r{i}") for i in range(6)] + [request("failline-model", "bad")]
    replies = gather(batches, requests)
    assert batches.submitted_jobs == 1 and len(server.batches) == 1
    assert set(server.batch_creates.values()) == {1}
    for reply in replies[:6]:  # the output file lists them in reverse order: matched by custom_id
        assert isinstance(reply, LLMResponse) and reply.tokens_in == 1200 and reply.extra["batch_id"] == "batch_1"
    assert isinstance(replies[6], ProviderUnavailable) and "the line failed" in str(replies[6])
    pricing = PricingTable.load(None)
    assert pricing.cost_micros("gpt-4.1", 1200, 40, batch=True) * 2 == pricing.cost_micros("gpt-4.1", 1200, 40)


@pytest.mark.parametrize("outcome", ["expired", "cancelled"])
def test_an_expired_or_cancelled_job_answers_what_it_finished_and_fails_the_rest(
        server: FaultServer, live_services: Settings, outcome: str) -> None:
    batches = collector(server, live_services, f"test-{uuid.uuid4().hex[:8]}:")
    server.batch_delay_s = 3600.0 if outcome == "cancelled" else 0.3
    server.batch_outcome = "expired"

    async def run() -> list[LLMResponse | BaseException]:
        calls = asyncio.gather(*(batches.complete(request("ok-model", f"x{i}")) for i in range(4)),
                               return_exceptions=True)
        if outcome == "cancelled":
            while not server.batches:
                await asyncio.sleep(0.05)
            await OpenAIBatches(OpenAIProvider(server.url, "k")).client.batches.cancel("batch_1")
        return await calls
    replies = asyncio.run(run())
    answered = [r for r in replies if isinstance(r, LLMResponse)]
    failed = [r for r in replies if isinstance(r, ProviderUnavailable)]
    assert (len(answered), len(failed)) == (2, 2), replies
    assert all(outcome in str(f) for f in failed)


def test_a_restarted_worker_polls_the_job_it_submitted_instead_of_submitting_it_again(
        server: FaultServer, live_services: Settings) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    server.batch_delay_s = 1.5
    first = collector(server, live_services, prefix)

    async def submit_then_die() -> None:  # the worker is killed while its job is in progress
        task = asyncio.ensure_future(first.complete(request("ok-model", "k-1")))
        while not server.batches:
            await asyncio.sleep(0.05)
        task.cancel()
    asyncio.run(submit_then_die())
    again = collector(server, live_services, prefix)  # a new process: nothing in memory
    [reply] = gather(again, [request("ok-model", "k-1")])
    assert isinstance(reply, LLMResponse) and reply.extra["batch_id"] == "batch_1"
    assert server.batch_creates["k-1"] == 1 and again.submitted_jobs == 0

    # killed after the provider created the job but before its id was stored: found by its
    # job key in the provider's list
    jobs = RedisBatchJobs(redis_client(live_services), prefix)
    jobs.assign(["k-2"], "job-crashed")
    api = OpenAIBatches(OpenAIProvider(server.url, "k"))
    asyncio.run(api.submit_batch([BatchLine("k-2", request("ok-model", "k-2"))], "job-crashed"))
    [reply] = gather(collector(server, live_services, prefix), [request("ok-model", "k-2")])
    assert isinstance(reply, LLMResponse) and server.batch_creates["k-2"] == 1
    assert jobs.batch_of("job-crashed") == reply.extra["batch_id"]
