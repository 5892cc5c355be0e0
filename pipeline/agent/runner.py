"""One agent step: guardrails, the cascade, and every LLM call made safe and paid for once.

For each call, in this order: a recorded result for this step and tier is reused (no call,
no charge); the ticket's and the tenant's budgets are reserved at the worst-case cost
(refused: the ticket is escalated with ``budget``); the model's breaker is asked (open: the
fallback model; both open: ``provider_down``); the shared rate limiter is waited on; the
call goes out under a timeout; failures are retried with full-jitter backoff, never sooner
than a Retry-After; a served reply is recorded under the step before anything else, then
the reservation is settled to the actual cost.

The cascade: the tiers are ordered cheapest first (by default gpt-4.1-nano, gpt-4.1-mini,
gpt-4.1); the step's tier answers first (the cheapest for most routes); when its reply does
not pass :class:`~pipeline.agent.machine.CascadePolicy`, the same step goes to the next
tier (or straight to the top one, for replies only the top tier may give), and every call
is attributed to the step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from pipeline.agent.ledger import Budgets, CallLedger, RateLimiter, StepResults
from pipeline.agent.machine import Action, CascadePolicy, Final, Reject, interpret
from pipeline.agent.prompt import CLASSIFY_PROMPT, KEY_SCHEMA, build_request, classifying
from pipeline.events import AgentStep
from pipeline.llm.batch import BatchCollector, checked_reply
from pipeline.llm.pricing import PricingTable
from pipeline.llm.simulated import SimulatedProvider
from pipeline.llm.tokens import count_tokens
from pipeline.llm.types import (
    LLMProvider,
    LLMRequest,
    LLMResponse,
    MalformedOutput,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ToolDefinition,
)
from pipeline.replay.tags import is_replay, run_id
from pipeline.resilience import CircuitBreaker, RetrySchedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_steps: int = 6
    max_tokens: int = 24_000  # per ticket, in + out
    max_cost_micros: int = 60_000  # per ticket
    call_timeout_s: float = 30.0
    max_output_tokens: int = 400


@dataclass
class CallRecord:
    """One call (or reuse) of one tier in one step, for usage records and the ticket's totals."""

    call_key: str
    tier: str
    model: str
    provider: str
    response: LLMResponse | None = None
    cost_micros: int = 0
    attempts: int = 0
    reused: bool = False
    outcome: str = "ok"  # ok, or the error class of the last attempt
    failures: list[str] = field(default_factory=list)  # error class of each failed attempt

    @property
    def billed(self) -> bool:
        return self.response is not None


@dataclass
class StepRun:
    calls: list[CallRecord]
    action: Action | None  # None: escalate with ``escalation``
    escalation: str = ""
    tier: str = ""  # the tier whose reply stands
    started_ms: int = 0  # wall clock when the step began (past the lane gate)


class StepRunner:
    def __init__(self, provider: LLMProvider, models: dict[str, str], fallback_model: str | None,
                 pricing: PricingTable, store: StepResults, budgets: Budgets, limiter: RateLimiter | None,
                 tools: Callable[[Collection[str]], tuple[ToolDefinition, ...]], system: str,
                 known_keys: Collection[str], ticket_budgets: dict[str, int], tenant_budget: Callable[[str], int],
                 limits: Limits | None = None,
                 cascade: CascadePolicy | None = None, schedule: RetrySchedule | None = None,
                 breaker: Callable[[str], CircuitBreaker] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, seed: int = 0,
                 lane_models: dict[str, dict[str, str]] | None = None,
                 batch_limiter: RateLimiter | None = None, batch_api: BatchCollector | None = None,
                 batch_timeout_s: float = 26 * 3600.0) -> None:
        self.provider = provider
        self.batch_api = batch_api  # the batch lane's calls go through the provider's Batch API
        self.batch_timeout_s = batch_timeout_s  # its completion window, and a margin
        self.models = models  # tier -> model
        self.lane_models = lane_models or {}  # a lane's own tiers (e.g. batch), else ``models``
        self.batch_limiter = batch_limiter  # the batch lane's share of each provider's rate limit
        self.fallback_model = fallback_model
        self.pricing = pricing
        self.store = store
        self.budgets = budgets
        self.limiter = limiter
        self.tools = tools
        self.system = system
        self.known_keys = frozenset(known_keys)
        self.ticket_budgets = ticket_budgets  # budget profile -> micro-dollars a ticket may spend
        self.tenant_budget = tenant_budget  # tenant -> micro-dollars a day
        self.limits = limits or Limits()
        self.cascade = cascade or CascadePolicy()
        self.schedule = schedule or RetrySchedule(max_attempts=4, base_s=0.25, cap_s=4.0)
        self._make_breaker = breaker or (lambda key: CircuitBreaker(failure_threshold=5, cooldown_s=30.0))
        self.breakers: dict[str, CircuitBreaker] = {}
        self.sleep = sleep
        self.seed = seed
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this runner, as a lease holder
        # A lease covers one attempt (renewed before each): a crashed holder delays the step's
        # re-run by at most one call timeout.
        self.lease_s = self.limits.call_timeout_s + 5
        self.ledger = CallLedger(store, budgets, sleep)
        #: told of every reply this runner paid for (step, model asked, reply, micro-dollars)
        #: the moment it arrives, before anything else can interrupt the step: a step that does
        #: not finish here (its partition moved, the worker stopped) was still paid, and its re-run
        #: elsewhere reuses the recorded reply without paying again (the metrics' spend)
        self.on_paid: Callable[[AgentStep, str, LLMResponse, int], None] | None = None

    def breaker(self, model: str) -> CircuitBreaker:
        key = f"{self.provider.name}:{model}"
        if key not in self.breakers:
            self.breakers[key] = self._make_breaker(key)
        return self.breakers[key]

    def guardrail(self, step: AgentStep) -> str | None:
        """Why this step must not run (the ticket is escalated), or None."""
        if step.step >= self.limits.max_steps:
            return f"step_limit: {step.step} steps taken (max {self.limits.max_steps})"
        if step.tokens_in + step.tokens_out >= self.limits.max_tokens:
            return f"token_limit: {step.tokens_in + step.tokens_out} tokens (max {self.limits.max_tokens})"
        if step.cost_micros >= self.limits.max_cost_micros:
            return f"cost_limit: {step.cost_micros} micro-dollars (max {self.limits.max_cost_micros})"
        return None

    async def run(self, step: AgentStep) -> StepRun:
        started = int(time.time() * 1000)
        run = await self._run(step)
        run.started_ms = started
        return run

    async def _run(self, step: AgentStep) -> StepRun:
        stop = self.guardrail(step)
        if stop is not None:
            return StepRun([], None, stop)
        models = self.models_for(step.lane)
        ladder = list(models)  # cheapest first; the last tier is the top
        routed = step.intent
        index = ladder.index(step.model_tier) if step.model_tier in models else len(ladder) - 1
        calls: list[CallRecord] = []
        action: Action | None = None
        while True:
            tier = ladder[index]
            top = index == len(ladder) - 1
            record = await self.call(step, tier)
            calls.append(record)
            if record.response is None:
                if not top and record.outcome == "CircuitOpen":
                    index += 1  # this tier's model is down: the next one answers
                    continue
                return StepRun(calls, None, _reason(record))
            action = interpret(record.response, offered_tools(step), self.known_keys, classifying(step))
            if top:
                if isinstance(action, Reject):
                    return StepRun(calls, None, f"invalid_output: {action.reason}")
                return StepRun(calls, action, tier=tier)
            verdict = self.cascade.judge(action, tier, routed)
            if verdict.accepted:
                return StepRun(calls, action, tier=tier)
            index = len(ladder) - 1 if verdict.top_only else index + 1
            log.info("step %s: %s tier reply not accepted (%s); asking the %s tier", step.step_id, tier,
                     verdict.why, ladder[index])

    def worst_case_micros(self, model: str, request: LLMRequest) -> int:
        tokens_in = sum(count_tokens(m.content) + 4 for m in request.messages) + 60 * len(request.tools) + 200
        return self.pricing.cost_micros(model, tokens_in, request.max_tokens)

    async def call(self, step: AgentStep, tier: str) -> CallRecord:
        call_key = f"{step.step_id}:{tier}"
        recorded = await self.ledger.recorded_or_claim(call_key, self.owner, self.lease_s)
        if recorded is not None:
            asked = str(recorded.extra.get("requested_model", recorded.model))
            return CallRecord(call_key, tier, asked, recorded.provider, recorded, self._cost(recorded), reused=True)
        record: CallRecord | None = None
        try:
            record = await self._call(step, tier, call_key)
            return record
        finally:
            if record is None or record.response is None:
                await self.ledger.release(call_key)  # a recorded reply needs no lease: it is found first

    async def _call(self, step: AgentStep, tier: str, call_key: str) -> CallRecord:
        primary = self.models_for(step.lane)[tier]
        ticket_limit = self.ticket_budgets.get(step.budget_profile, self.ticket_budgets.get("default", 0))
        tenant_limit = self.tenant_budget(step.tenant_id)
        tools = self.tools(offered_tools(step))
        record = CallRecord(call_key, tier, primary, self.provider.name)
        rng = random.Random(f"{self.seed}:{call_key}")
        while record.attempts < self.schedule.max_attempts:
            fallback = self.fallback_model
            if self.breaker(primary).allow():
                model = primary
            elif fallback is not None and fallback != primary and self.breaker(fallback).allow():
                model = fallback
            else:
                record.outcome = "CircuitOpen"
                return record
            record.model = model
            record.attempts += 1
            request = self.request(step, model, tools, f"{call_key}:{record.attempts}")
            reservation = f"{call_key}:{record.attempts}"
            granted = await self.ledger.begin_attempt(call_key, self.owner, self.lease_s, step.tenant_id,
                                                      run_id(step.ticket_id, step.replay_tag), reservation,
                                                      self.worst_case_micros(model, request), tenant_limit,
                                                      ticket_limit, replay_scope(step))
            if not getattr(granted, "granted", True):
                record.outcome = f"budget: {getattr(granted, 'reason', 'refused')}"
                return record
            batched = self.batch_api is not None and step.lane == "batch"
            # (A Batch API call left in flight is found by its job key, in the collector.)
            if getattr(granted, "resumed", False) and not batched:
                recovered = await self.recovered(request.request_id)
                if recovered is not None:  # served to a worker that died before recording it
                    log.info("call %s: the reply served to an attempt left in flight is recovered, not bought "
                             "again", request.request_id)
                    recovered = dataclasses.replace(recovered, extra={**recovered.extra, "requested_model": model})
                    return await self._paid(step, record, call_key, reservation, model, recovered, None)
            if not batched:  # a Batch API job has its own quota, not the real-time rate limit
                limiters = [self.batch_limiter] if step.lane == "batch" and self.batch_limiter else []  # share first
                await self.ledger.wait_for_rate([*limiters, *([self.limiter] if self.limiter else [])],
                                                self.provider.name, model)
            retry_after: float | None = None
            try:
                served, recorded = await asyncio.wait_for(
                    self._served(step, request, call_key, model, batched),
                    self.batch_timeout_s if batched else self.limits.call_timeout_s)
            except (ProviderError, TimeoutError) as exc:
                error = exc if isinstance(exc, ProviderError) else ProviderTimeout("call timed out")
                await self.ledger.settle(step.tenant_id, run_id(step.ticket_id, step.replay_tag), reservation, 0)
                record.failures.append(type(error).__name__)
                record.outcome = type(error).__name__
                if getattr(error, "breaker_failure", True):
                    self.breaker(model).record_failure()
                if not error.retryable:  # refused as asked: the step ends on it (escalated with the reason)
                    return record
                if isinstance(error, RateLimited):
                    retry_after = error.retry_after_s
                delay = self.schedule.delay_s(record.attempts, rng, retry_after)
                if delay is None:
                    return record
                await self.sleep(delay)
                continue
            return await self._paid(step, record, call_key, reservation, model, served, recorded)
        return record

    async def _paid(self, step: AgentStep, record: CallRecord, call_key: str, reservation: str, model: str,
                    served: LLMResponse, recorded: LLMResponse | None) -> CallRecord:
        """A served reply: recorded (the moment it arrived, or now: if the store is down,
        outside the call's timeout, a reply that was paid for waits for its store however
        long it is down), then the reservation settled to its cost."""
        response = recorded or await self.ledger.record(call_key, served)
        await self.ledger.settle(step.tenant_id, run_id(step.ticket_id, step.replay_tag), reservation,
                                 self._cost(served))
        record.response = response
        record.cost_micros = self._cost(response)
        self.breaker(model).record_success()
        record.outcome = "ok"
        return record

    async def recovered(self, request_id: str) -> LLMResponse | None:
        """The reply the provider served to ``request_id``, when it keeps them (else None: the
        attempt is made again, and a reply lost in flight is paid twice). A provider error
        here is not fatal (the call is made again); a transient store failure fails the step,
        which runs again when the store is back."""
        recover = getattr(self.provider, "recover", None)
        if recover is None:
            return None
        try:
            return await asyncio.wait_for(recover(request_id), self.limits.call_timeout_s)
        except (ProviderError, TimeoutError) as exc:
            log.warning("call %s: cannot ask %s for a reply served before a crash (%s); calling again",
                        request_id, self.provider.name, exc)
            return None

    def _cost(self, response: LLMResponse) -> int:
        """Micro-dollars of a reply, priced by the model asked for (a provider may answer with a
        dated snapshot name)."""
        asked = str(response.extra.get("requested_model", response.model))
        return self.pricing.cost_micros(asked, response.tokens_in, response.tokens_out, response.tokens_cached,
                                        batch="batch_id" in response.extra)

    async def _served(self, step: AgentStep, request: LLMRequest, call_key: str, model: str,
                      batched: bool = False) -> tuple[LLMResponse, LLMResponse | None]:
        """The provider's reply (a malformed one too: it was served and billed, the workflow
        rejects it), and the reply as recorded the moment it arrived (None: the store was
        unreachable), in the task that received it. ``batched``: through the Batch API."""
        try:
            if batched and self.batch_api is not None:
                response = checked_reply(await self.batch_api.complete(request))
            else:
                response = await self.provider.complete(request)
        except MalformedOutput as exc:
            response = exc.response
        # Priced by the model asked for: a provider may answer with a dated snapshot name.
        response = dataclasses.replace(response, extra={**response.extra, "requested_model": model})
        if self.on_paid is not None:
            self.on_paid(step, model, response, self._cost(response))
        return response, self.ledger.record_now(call_key, response)

    def request(self, step: AgentStep, model: str, tools: tuple[ToolDefinition, ...], request_id: str) -> LLMRequest:
        if classifying(step):  # the intent only: a short prompt, no tools, a few output tokens
            return build_request(step, model, CLASSIFY_PROMPT, (), request_id, 40, KEY_SCHEMA)
        return build_request(step, model, self.system, tools, request_id, self.limits.max_output_tokens)

    def models_for(self, lane: str) -> dict[str, str]:
        return self.lane_models.get(lane) or self.models


def offered_tools(step: AgentStep) -> list[str]:
    """The tools this step may call: the route's, until the ticket has made as many tool
    calls as the route allows (the router's ``tool_calls`` fact); then none, and the model
    answers from what the tools returned. Code, not the model, ends the gathering."""
    if classifying(step):
        return []
    made = sum(1 for m in step.transcript if m.role == "tool")
    if made >= step.tool_call_cap:  # typed, defaults to 0: fails closed
        return []
    return list(step.allowed_tools)


def _reason(record: CallRecord) -> str:
    if record.outcome.startswith("budget"):
        return record.outcome
    if record.outcome == "CircuitOpen":
        return f"provider_down: {record.provider} {record.model} (circuit open, no fallback available)"
    return f"provider_error: {record.outcome} after {record.attempts} attempts"


def naive_step_cost(provider: SimulatedProvider, pricing: PricingTable, request: LLMRequest) -> int:
    """The cost of one call as the naive loop would pay it (strong model, no cache, no rules)."""
    return naive_step(provider, pricing, request)[0]


def naive_step(provider: SimulatedProvider, pricing: PricingTable, request: LLMRequest) -> tuple[int, float]:
    """One call of the naive loop: its cost (micro-dollars) and its latency (ms, the simulated
    provider's model at full scale)."""
    tokens_in, cached = provider.count_input(request)
    text, calls, _ = provider.decide(request)
    tokens_out = max(1, count_tokens(text + "".join(c.name + c.arguments for c in calls)))
    return pricing.cost_micros(request.model, tokens_in, tokens_out, cached), provider.timing_ms(request, tokens_out)[1]


__all__ = ["CallRecord", "Final", "Limits", "StepRun", "StepRunner", "naive_step", "naive_step_cost"]


def replay_scope(step: AgentStep) -> str | None:
    """The budget scope of a replay's calls (its tag: ``replay --budget`` caps it)."""
    return step.replay_tag if is_replay(step.replay_tag) else None
