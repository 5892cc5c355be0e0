"""Build the agent's parts from the settings: provider, pricing, runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import redis

from pipeline.adapters.redis_billing import RedisBilling
from pipeline.adapters.redis_budget import RedisBudgets
from pipeline.adapters.redis_rate_limit import RedisRateLimiter
from pipeline.adapters.redis_step_results import RedisStepResults
from pipeline.agent.machine import CascadePolicy
from pipeline.agent.prompt import system_prompt, tool_definitions
from pipeline.agent.runner import Limits, StepRunner
from pipeline.llm.batch import BatchAPI, BatchCollector
from pipeline.llm.pricing import PricingTable
from pipeline.llm.simulated import SimulatedProvider
from pipeline.llm.types import LLMProvider, ToolDefinition
from pipeline.resilience import CircuitBreaker, RetrySchedule
from pipeline.settings import Settings
from pipeline.tools.registry import ToolRegistry


def build_provider(settings: Settings, client: redis.Redis[bytes], intents: Collection[str]) -> LLMProvider:
    if settings.llm_provider == "openai":
        from pipeline.llm.openai_provider import OpenAIProvider

        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return OpenAIProvider(settings.llm_base_url, key, timeout_s=settings.llm_timeout_s,
                              store_completions=settings.llm_store_completions,
                              structured_output=settings.llm_structured_output)
    return SimulatedProvider(seed=settings.sim_seed, fault_rate=settings.sim_fault_rate, intents=list(intents),
                             billing=RedisBilling(client, settings.redis_key_prefix()),
                             time_scale=settings.sim_time_scale,
                             timeout_s=min(settings.llm_timeout_s, 20.0) + 1.0,
                             crash_after_billing=settings.sim_crash_after_billing)


def tiers(settings: Settings) -> dict[str, str]:
    """The cascade's tiers, cheapest first: tier name -> model."""
    mid = {"mid": settings.llm_mid_model} if settings.llm_mid_model else {}
    return {"cheap": settings.llm_cheap_model, **mid, "strong": settings.llm_strong_model}


def build_runner(settings: Settings, client: redis.Redis[bytes], tools: ToolRegistry,
                 intents: Collection[str]) -> StepRunner:
    prefix = settings.redis_key_prefix()
    share = settings.llm_batch_rate_share

    def definitions(allowed: Collection[str]) -> tuple[ToolDefinition, ...]:
        return tool_definitions([tools.spec(name) for name in allowed if name in tools.names()])

    def tenant_budget(tenant: str) -> int:
        return settings.tenant_budgets.get(tenant, settings.tenant_daily_budget_micros)

    runner = StepRunner(
        provider=build_provider(settings, client, intents),
        models=tiers(settings),
        fallback_model=settings.llm_fallback_model,
        pricing=PricingTable.load(settings.pricing_file),
        store=RedisStepResults(client, prefix),
        budgets=RedisBudgets(client, prefix),
        limiter=RedisRateLimiter(client, prefix, settings.llm_rate_per_s, settings.llm_rate_burst),
        tools=definitions,
        system=system_prompt(),  # the keys: the router's shortlist in each ticket's facts
        known_keys=intents,
        ticket_budgets=settings.budget_profiles,
        tenant_budget=tenant_budget,
        limits=Limits(max_steps=settings.agent_max_steps, max_tokens=settings.agent_max_tokens,
                      max_cost_micros=settings.agent_max_cost_micros, call_timeout_s=settings.llm_timeout_s),
        cascade=CascadePolicy(min_confidence=settings.cascade_min_confidence,
                              sensitive_confidence=settings.cascade_sensitive_confidence,
                              acting_tools=frozenset(n for n in tools.names() if tools.spec(n).side_effecting)),
        schedule=RetrySchedule(max_attempts=settings.llm_max_attempts, base_s=0.25 * settings.sim_time_scale
                               if settings.llm_provider == "simulated" else 0.25, cap_s=4.0),
        breaker=lambda key: CircuitBreaker(settings.llm_breaker_failures, settings.llm_breaker_cooldown_s),
        seed=settings.sim_seed,
        lane_models={"batch": settings.agent_batch_models} if settings.agent_batch_models else None,
        # The batch lane may take this share of a provider's rate limit, the rest stays for
        # interactive calls (its own GCRA keys, shared by all workers, charged before the common ones).
        batch_limiter=RedisRateLimiter(client, f"{prefix}batch:", settings.llm_rate_per_s * share,
                                       max(1, int(settings.llm_rate_burst * share))),
    )
    if settings.llm_batch_api:
        runner.batch_api = build_batch_collector(settings, client, runner.provider, runner.ledger.io)
    return runner


def build_batch_collector(settings: Settings, client: redis.Redis[bytes], provider: LLMProvider,
                          io: Callable[..., Awaitable[Any]]) -> BatchCollector:
    """The batch lane's Batch API: OpenAI's through the SDK, or the simulated provider's."""
    from pipeline.adapters.redis_batch_jobs import RedisBatchJobs

    api: BatchAPI
    poll_s = settings.llm_batch_poll_s
    if isinstance(provider, SimulatedProvider):
        from pipeline.llm.simulated_batch import SimulatedBatches

        api = SimulatedBatches(provider, client, settings.redis_key_prefix(), settings.sim_batch_window_s)
        poll_s *= settings.sim_time_scale
    else:
        from pipeline.llm.openai_batch import OpenAIBatches
        from pipeline.llm.openai_provider import OpenAIProvider

        assert isinstance(provider, OpenAIProvider)
        api = OpenAIBatches(provider)
    return BatchCollector(api, RedisBatchJobs(client, settings.redis_key_prefix()), io,
                          settings.llm_batch_max_lines, settings.llm_batch_max_wait_s, poll_s)
