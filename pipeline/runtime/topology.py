"""The composition root of the processors: which ports each one gets, where it reads.

Processors: ``intake`` (tickets.ingress), ``cache`` (tickets.accepted, plus the follower that
keeps this worker's cache index up to date from cache.updates), ``cache-writer``
(tickets.responses), ``router`` (tickets.uncached, plus the tool results of its tool routes
on tools.results) and ``tools`` (tools.calls, plus the cache invalidations on
tools.invalidations).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from pipeline.adapters.redis_idempotency import RedisIdempotencyStore
from pipeline.adapters.redis_kb import RedisKbVersions
from pipeline.adapters.redis_tool_cache import RedisToolCache
from pipeline.cache.embedder import MicroBatcher
from pipeline.cache.metrics import CacheMetrics
from pipeline.cache.semantic_cache import SemanticCache
from pipeline.errors import ConfigurationError
from pipeline.events import (
    AgentStep,
    CacheUpdate,
    TicketResolved,
    TicketSubmitted,
    ToolCall,
    ToolInvalidation,
    ToolResult,
    UsageRecord,
)
from pipeline.processing import SystemClock
from pipeline.resilience import CircuitBreaker, RetrySchedule
from pipeline.routing.metrics import RouterMetrics
from pipeline.routing.rulebook import RuleBook
from pipeline.runtime.binding import Binding
from pipeline.settings import Settings
from pipeline.tools.metrics import ToolMetrics
from pipeline.tools.registry import ToolRegistry
from pipeline.tools.runner import ToolRunner
from processors.cache import CacheLookup
from processors.cache_follower import CacheFollower
from processors.cache_writer import CacheWriter
from processors.intake import Intake, IntakeLimits
from processors.router import Router, RouterToolResults
from processors.tools import ToolCacheInvalidator, ToolProcessor


@dataclass
class WorkerContext:
    """What the processors of one worker process share."""

    settings: Settings
    instance_id: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _shared: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def shared(self, name: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._shared:
                self._shared[name] = make()
            return self._shared[name]

    def redis(self) -> redis.Redis[bytes]:
        client: redis.Redis[bytes] = self.shared("redis", lambda: redis_client(self.settings))
        return client

    def key_prefix(self) -> str:
        return self.settings.redis_key_prefix()

    def close(self) -> None:
        for name in ("cache", "embedder", "tool_runner", "bank", "llm_loop"):
            part = self._shared.get(name)
            if part is not None:
                part.close()


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    return redis.Redis.from_url(settings.redis_location(), socket_timeout=5, socket_connect_timeout=5,
                                health_check_interval=30)


def _intake(ctx: WorkerContext) -> list[Binding]:
    settings = ctx.settings
    processor = Intake(
        RedisIdempotencyStore(ctx.redis(), settings.idempotency_ttl_s),
        SystemClock(),
        IntakeLimits(settings.max_body_bytes, settings.max_subject_bytes),
        key_prefix=ctx.key_prefix(),
    )
    return [Binding(processor.name, ("tickets.ingress",), "TicketSubmitted",
                    TicketSubmitted.from_record, processor.handle, allow_json=True,
                    prepare=processor.prepare)]


def _embedder(ctx: WorkerContext) -> MicroBatcher:
    from pipeline.cache.factory import build_embedder

    embedder: MicroBatcher = ctx.shared("embedder", lambda: build_embedder(ctx.settings))
    return embedder


def _semantic_cache(ctx: WorkerContext) -> SemanticCache:
    from pipeline.cache.factory import build_cache

    return build_cache(ctx.settings, ctx.instance_id, RedisKbVersions(ctx.redis(), ctx.key_prefix()),
                       CacheMetrics(ctx.registry), embedder=_embedder(ctx))


def _tools(ctx: WorkerContext) -> ToolRegistry:
    from pipeline.routing.factory import build_bank
    from pipeline.tools.banking import banking_tools

    bank = ctx.shared("bank", lambda: build_bank(ctx.settings))
    registry: ToolRegistry = ctx.shared("tool_registry", lambda: banking_tools(bank))
    return registry


def _rulebook(ctx: WorkerContext) -> RuleBook:
    from pipeline.routing.factory import build_rulebook

    book: RuleBook = ctx.shared("rulebook", lambda: build_rulebook(ctx.settings, _tools(ctx)))
    return book


def _cache(ctx: WorkerContext) -> list[Binding]:
    cache: SemanticCache = ctx.shared("cache", lambda: _semantic_cache(ctx))
    from pipeline.llm.pricing import PricingTable

    lookup = CacheLookup(cache, SystemClock(), PricingTable.load(ctx.settings.pricing_file))
    # An embedded replica reads every update in a group of its own; a shared server, once.
    follower_name = "cache-index" if ctx.settings.qdrant_url else f"cache-index.{ctx.instance_id}"
    follower = CacheFollower(cache, follower_name)
    return [
        Binding(lookup.name, ("tickets.accepted",), "TicketSubmitted", TicketSubmitted.from_record,
                lookup.handle, prepare=lookup.prepare),
        Binding(follower.name, ("cache.updates",), "CacheUpdate", CacheUpdate.from_record,
                follower.handle, prepare=follower.prepare),
    ]


def _cache_writer(ctx: WorkerContext) -> list[Binding]:
    writer = CacheWriter(RedisKbVersions(ctx.redis(), ctx.key_prefix()), ctx.settings.cache_ttl_s,
                         ctx.settings.cache_never_keys)
    return [Binding(writer.name, ("tickets.responses",), "TicketResolved", TicketResolved.from_record,
                    writer.handle)]


def _router(ctx: WorkerContext) -> list[Binding]:
    from pipeline.routing.engine import RouteEngine
    from pipeline.routing.factory import build_classifier

    embedder = _embedder(ctx)
    engine = RouteEngine(_rulebook(ctx), build_classifier(ctx.settings, embedder))
    processor = Router(engine, embedder, SystemClock(), ctx.settings.agent_enabled, RouterMetrics(ctx.registry))
    results = RouterToolResults(_rulebook(ctx), SystemClock())
    return [
        Binding(processor.name, ("tickets.uncached",), "TicketSubmitted", TicketSubmitted.from_record,
                processor.handle, prepare=processor.prepare),
        Binding(results.name, ("tools.results",), "ToolResult", ToolResult.from_record, results.handle),
    ]


def _tool_processor(ctx: WorkerContext) -> list[Binding]:
    settings = ctx.settings
    cache = RedisToolCache(ctx.redis(), ctx.key_prefix(), settings.tool_cache_ttl_s)
    runner = ctx.shared("tool_runner", lambda: ToolRunner(
        _tools(ctx), _rulebook(ctx), cache,
        RetrySchedule(max_attempts=settings.tool_max_attempts, base_s=0.05, cap_s=0.5),
        lambda tool: CircuitBreaker(settings.tool_breaker_failures, settings.tool_breaker_cooldown_s)))
    processor = ToolProcessor(runner, SystemClock(), ToolMetrics(ctx.registry))
    invalidator = ToolCacheInvalidator(cache.invalidate)
    return [
        Binding(processor.name, ("tools.calls",), "ToolCall", ToolCall.from_record, processor.handle),
        Binding(invalidator.name, ("tools.invalidations",), "ToolInvalidation", ToolInvalidation.from_record,
                invalidator.handle),
    ]


def _agent(ctx: WorkerContext) -> list[Binding]:
    from pipeline.agent.aio import LaneGate, LoopThread
    from pipeline.agent.factory import build_runner
    from pipeline.agent.metrics import AgentMetrics
    from processors.agent import AgentProcessor, AgentToolResults

    settings = ctx.settings
    runner = build_runner(settings, ctx.redis(), _tools(ctx), _rulebook(ctx).intents())
    loop = ctx.shared("llm_loop", LoopThread)
    gate = LaneGate(settings.agent_interactive_concurrency, settings.agent_batch_concurrency)
    metrics = AgentMetrics(ctx.registry)
    bindings = []
    for lane in ("interactive", "batch"):
        processor = AgentProcessor(lane, runner, loop, gate, SystemClock(), _tools(ctx), _rulebook(ctx), metrics)
        # Pipelined: steps start as they arrive and commit as they finish (in offset order).
        in_flight = settings.agent_interactive_concurrency if lane == "interactive" else 4 * gate.batch_concurrency
        bindings.append(Binding(processor.name, (f"agent.steps.{lane}",), "AgentStep", AgentStep.from_record,
                                processor.handle, start=processor.start, finish=processor.finish,
                                max_in_flight=in_flight))
    results = AgentToolResults(SystemClock())
    bindings.append(Binding(results.name, ("tools.results",), "ToolResult", ToolResult.from_record, results.handle))
    return bindings


def _accounting(ctx: WorkerContext) -> list[Binding]:
    from pipeline.adapters.redis_costs import RedisCostWindows
    from processors.accounting import TicketCosts, UsageAggregator

    settings = ctx.settings
    tickets = TicketCosts()
    usage = UsageAggregator(RedisCostWindows(ctx.redis(), ctx.key_prefix()),
                            lambda tenant: settings.tenant_budgets.get(tenant, settings.tenant_daily_budget_micros))
    return [
        Binding(tickets.name, ("tickets.responses",), "TicketResolved", TicketResolved.from_record, tickets.handle),
        Binding(usage.name, ("llm.usage",), "UsageRecord", UsageRecord.from_record, usage.handle,
                prepare=usage.prepare),
    ]


PROCESSORS: dict[str, Callable[[WorkerContext], list[Binding]]] = {
    "intake": _intake,
    "cache": _cache,
    "cache-writer": _cache_writer,
    "router": _router,
    "tools": _tool_processor,
    "agent": _agent,
    "accounting": _accounting,
}


def bindings(ctx: WorkerContext, names: list[str] | None = None) -> list[Binding]:
    chosen = names or list(PROCESSORS)
    unknown = [n for n in chosen if n not in PROCESSORS]
    if unknown:
        raise ConfigurationError(
            f"unknown processor(s) {', '.join(unknown)}; known: {', '.join(PROCESSORS)}"
        )
    return [binding for name in chosen for binding in PROCESSORS[name](ctx)]
