"""The OpenAI-compatible provider through the official SDK against a local server that speaks
the protocol, faults included; and the agent's breaker and fallback against that server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator

import pytest

from pipeline.agent.machine import Final
from pipeline.agent.prompt import KEY_SCHEMA
from pipeline.agent.runner import Limits, StepRunner
from pipeline.events import AgentStep, Message
from pipeline.llm.openai_provider import OpenAIProvider
from pipeline.llm.pricing import PricingTable
from pipeline.llm.types import (
    ChatMessage,
    LLMRequest,
    LLMResponse,
    MalformedOutput,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    ToolDefinition,
)
from pipeline.resilience import CircuitBreaker, RetrySchedule
from tests.fakes import MemoryStepResults
from tests.fault_server import FaultServer

pytestmark = pytest.mark.integration
TOOL = ToolDefinition("card_status", "status of a card", {"type": "object", "properties": {
    "customer_id": {"type": "string"}}})


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def ask(server: FaultServer, model: str, timeout_s: float = 30.0) -> LLMResponse:
    provider = OpenAIProvider(server.url, "test-key", timeout_s=timeout_s)
    request = LLMRequest(model=model, messages=(ChatMessage("system", "be brief"), ChatMessage("user", "rate?")),
                         tools=(TOOL,))
    return asyncio.run(provider.complete(request))


def test_streamed_answer_with_ttft_and_usage_including_cached_tokens(server: FaultServer) -> None:
    response = ask(server, "ok-model")
    assert json.loads(response.text)["resolution_key"] == "exchange_rate"
    assert (response.tokens_in, response.tokens_out, response.tokens_cached) == (1200, 40, 1024)
    assert 0 < response.ttft_ms <= response.latency_ms
    assert response.model == "ok-model-2026-01-01"


def test_a_stream_without_a_usage_chunk_is_counted_by_the_bundled_tokenizer(server: FaultServer) -> None:
    response = ask(server, "nousage-model")
    assert json.loads(response.text)["resolution_key"] == "exchange_rate"
    assert response.extra["usage"] == "estimated" and response.tokens_cached == 0
    # the messages, their framing and the tool schema in; the streamed answer out
    assert 30 < response.tokens_in < 200 and 10 < response.tokens_out < 60, response
    assert "usage" not in ask(server, "ok-model").extra  # reported usage is taken as it is


def test_a_classifying_request_asks_for_structured_output(server: FaultServer) -> None:
    provider = OpenAIProvider(server.url, "test-key", timeout_s=30)
    request = LLMRequest(model="ok-classify", messages=(ChatMessage("user", "rate?"),), response_schema=KEY_SCHEMA)
    asyncio.run(provider.complete(request))
    sent = server.bodies["ok-classify"]["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "reply", "schema": KEY_SCHEMA, "strict": True}}
    asyncio.run(provider.complete(LLMRequest(model="ok-plain", messages=(ChatMessage("user", "rate?"),))))
    assert "response_format" not in server.bodies["ok-plain"]  # an answering step asks for none


def test_a_streamed_tool_call_is_reassembled(server: FaultServer) -> None:
    response = ask(server, "tools-model")
    [call] = response.tool_calls
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_abc", "card_status",
                                                                     {"customer_id": "C-00001"})


def test_faults_become_typed_errors(server: FaultServer) -> None:
    with pytest.raises(RateLimited) as limited:
        ask(server, "ratelimit-model")
    assert limited.value.retry_after_s == 2.0
    with pytest.raises(ProviderUnavailable):
        ask(server, "down-model")
    with pytest.raises(ProviderTimeout):
        ask(server, "slow-model", timeout_s=0.5)
    with pytest.raises(MalformedOutput) as malformed:
        ask(server, "malformed-model")
    assert malformed.value.response.tokens_out == 40  # served and billed: the usage is kept
    with pytest.raises(ProviderUnavailable, match="without a finish reason"):
        ask(server, "cutoff-model")
    with pytest.raises(ProviderRejected) as refused:
        ask(server, "refuse-model")
    assert not refused.value.retryable and not refused.value.breaker_failure


def test_a_structured_reply_is_asked_for_in_the_servers_dialect(server: FaultServer) -> None:
    request = LLMRequest(model="ok-dialect", messages=(ChatMessage("user", "intent?"),), response_schema=KEY_SCHEMA)
    asyncio.run(OpenAIProvider(server.url, "k", structured_output="json_object").complete(request))
    assert server.bodies["ok-dialect"]["response_format"] == {"type": "json_object", "schema": KEY_SCHEMA}
    asyncio.run(OpenAIProvider(server.url, "k").complete(request))
    assert server.bodies["ok-dialect"]["response_format"]["type"] == "json_schema"


def state(breakers: dict[str, CircuitBreaker], key: str) -> str:
    return breakers[key].state


Store = MemoryStepResults


class Budgets:
    def reserve(self, *args: object) -> object:
        return None

    def settle(self, *args: object) -> bool:
        return True


def test_breaker_opens_sends_work_to_the_fallback_and_closes_after_its_cool_down(server: FaultServer) -> None:
    now = [0.0]
    breakers: dict[str, CircuitBreaker] = {}

    def breaker(key: str) -> CircuitBreaker:
        breakers[key] = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=lambda: now[0])
        return breakers[key]

    async def no_sleep(_: float) -> None:
        return None

    prices = PricingTable.from_mapping({m: {"input": "1", "cached_input": "0.5", "output": "2"}
                                        for m in ("flaky-primary", "ok-fallback")})
    runner = StepRunner(OpenAIProvider(server.url, "k", timeout_s=5), {"cheap": "flaky-primary",
                                                                       "strong": "flaky-primary"},
                        "ok-fallback", prices, Store(), Budgets(), None, lambda allowed: (), "system",
                        ["exchange_rate"], {"default": 10**9}, lambda t: 10**9, limits=Limits(),
                        schedule=RetrySchedule(max_attempts=4, base_s=0.01, cap_s=0.01), breaker=breaker,
                        sleep=no_sleep)

    def step(n: int) -> AgentStep:
        return AgentStep(step_id=f"t-{n}:0", ticket_id=f"t-{n}", tenant_id="a", workflow="w", step=0, ticket=b"",
                         model_tier="strong", transcript=[Message("user", "What rate do you use?")])

    server.failing = True
    first = asyncio.run(runner.run(step(1)))
    assert server.requests["flaky-primary"] == 3  # three 503s open the breaker...
    assert first.calls[0].model == "ok-fallback" and first.action is not None  # ...and the fallback answers
    assert state(breakers, "openai:flaky-primary") == "open"
    asyncio.run(runner.run(step(2)))
    assert server.requests["flaky-primary"] == 3  # open: the primary is not asked at all
    server.failing = False
    now[0] = 31.0  # after the cool-down a probe goes to the primary, succeeds and closes the breaker
    third = asyncio.run(runner.run(step(3)))
    assert third.calls[0].model == "flaky-primary" and server.requests["flaky-primary"] == 4
    assert state(breakers, "openai:flaky-primary") == "closed"


def test_a_refused_request_is_not_retried_and_ends_the_step_with_its_reason(server: FaultServer) -> None:
    async def no_sleep(_: float) -> None:
        return None

    prices = PricingTable.from_mapping({"refuse-model": {"input": "1", "cached_input": "0.5", "output": "2"}})
    runner = StepRunner(OpenAIProvider(server.url, "k", timeout_s=5),
                        {"cheap": "refuse-model", "strong": "refuse-model"},
                        None, prices, Store(), Budgets(), None, lambda allowed: (), "system", ["exchange_rate"],
                        {"default": 10**9}, lambda t: 10**9, limits=Limits(),
                        schedule=RetrySchedule(max_attempts=4, base_s=0.01, cap_s=0.01), sleep=no_sleep)
    before = server.requests["refuse-model"]
    run = asyncio.run(runner.run(AgentStep(step_id="r-1:0", ticket_id="r-1", tenant_id="a", workflow="w", step=0,
                                           ticket=b"", model_tier="strong", transcript=[Message("user", "Rate?")])))
    assert server.requests["refuse-model"] - before == 1  # asked once: the same request again cannot succeed
    assert run.action is None and "ProviderRejected" in (run.escalation or ""), run.escalation
    assert runner.breaker("refuse-model").state == "closed"  # a refusal says nothing of the provider's health


class InFlight(Budgets):
    """Budgets on which the listed reservations were taken by a worker that then died."""

    def __init__(self, left: set[str]) -> None:
        self.left = left

    def reserve(self, *args: object) -> object:
        from pipeline.adapters.redis_budget import Reservation

        return Reservation(True, resumed=str(args[2]) in self.left)


def test_a_stored_completion_lost_with_its_worker_is_recovered_by_its_request_id(server: FaultServer) -> None:
    provider = OpenAIProvider(server.url, "k", timeout_s=5, store_completions=True)
    prices = PricingTable.from_mapping({"ok-stored": {"input": "1", "cached_input": "0.5", "output": "2"}})
    step = AgentStep(step_id="t-9:0", ticket_id="t-9", tenant_id="a", workflow="w", step=0, ticket=b"",
                     model_tier="strong", transcript=[Message("user", "What rate do you use?")])

    def runner(left: set[str]) -> StepRunner:
        return StepRunner(provider, {"strong": "ok-stored"}, None, prices, Store(), InFlight(left), None,
                          lambda allowed: (), "system", ["exchange_rate"], {"default": 10**9}, lambda t: 10**9)

    # A worker's attempt 1: the server serves and stores the completion, then the connection
    # drops before the reply arrives (the worker dies with it).
    server.drop_after_serving = True
    lost = runner(set()).request(step, "ok-stored", (), "t-9:0:strong:1")
    with pytest.raises(ProviderUnavailable):
        asyncio.run(provider.complete(lost))
    server.drop_after_serving = False
    assert server.requests["ok-stored"] == 1
    assert server.bodies["ok-stored"]["store"] is True
    assert server.bodies["ok-stored"]["metadata"] == {"ticketflow_request_id": "t-9:0:strong:1"}
    # The step runs again elsewhere and finds attempt 1 left in flight: it asks the provider
    # for the stored completion instead of calling again.
    run = asyncio.run(runner({"t-9:0:strong:1"}).run(step))
    assert server.requests["ok-stored"] == 1  # not bought twice
    [call] = run.calls
    assert call.response is not None and call.response.extra["recovered"].startswith("chatcmpl-")
    assert (call.response.tokens_in, call.response.tokens_out, call.response.tokens_cached) == (1200, 40, 1024)
    assert isinstance(run.action, Final) and run.action.resolution_key == "exchange_rate"
    # Nothing stored for an attempt: the call is made.
    other = dataclasses.replace(step, step_id="t-10:0", ticket_id="t-10")
    asyncio.run(runner({"t-10:0:strong:1"}).run(other))
    assert server.requests["ok-stored"] == 2
