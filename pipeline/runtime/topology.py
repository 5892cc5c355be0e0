"""The composition root of the processors: which ports each one gets, where it reads.

Processors: ``intake`` (tickets.ingress), ``cache`` (tickets.accepted, plus the follower that
keeps this worker's cache index up to date from cache.updates), ``cache-writer``
(tickets.responses), ``cache-audit`` (tickets.replay.responses: the audit's answers; and
tickets.feedback), ``router`` (tickets.uncached, plus the tool results of its tool routes
on tools.results) and ``tools`` (tools.calls, plus the cache invalidations on
tools.invalidations).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.adapters.redis_audit import RedisPolicyLevels
from pipeline.adapters.redis_idempotency import RedisIdempotencyStore
from pipeline.adapters.redis_kb import RedisKbVersions
from pipeline.adapters.redis_tool_cache import RedisToolCache
from pipeline.cache.embedder import MicroBatcher
from pipeline.cache.metrics import CacheMetrics
from pipeline.cache.semantic_cache import SemanticCache
from pipeline.errors import ConfigurationError
from pipeline.events import (
    AgentStep,
    CacheFeedback,
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
from pipeline.routing.classifier import IntentClassifier
from pipeline.routing.metrics import RouterMetrics
from pipeline.routing.rulebook import RuleBook
from pipeline.runtime.binding import Binding, per_record
from pipeline.runtime.context import WorkerContext
from pipeline.tools.metrics import ToolMetrics
from pipeline.tools.registry import ToolRegistry
from pipeline.tools.runner import ToolRunner
from processors.cache import CacheLookup
from processors.cache_follower import CacheFollower
from processors.cache_writer import CacheWriter
from processors.intake import Intake, IntakeLimits
from processors.router import Router, RouterToolResults
from processors.tools import ToolCacheInvalidator, ToolProcessor


def _intake(ctx: WorkerContext) -> list[Binding]:
    settings = ctx.settings
    processor = Intake(
        RedisIdempotencyStore(ctx.redis(), settings.idempotency_ttl_s),
        SystemClock(),
        IntakeLimits(settings.max_body_bytes, settings.max_subject_bytes),
        key_prefix=ctx.key_prefix(),
    )
    return [Binding(processor.name, ("tickets.ingress",), "TicketSubmitted",
                    TicketSubmitted.from_record, handle_batch=processor.handle_batch, allow_json=True)]


def _embedder(ctx: WorkerContext) -> MicroBatcher:
    from pipeline.cache.factory import build_embedder

    embedder: MicroBatcher = ctx.shared("embedder", lambda: build_embedder(ctx.settings, in_worker=True))
    return embedder


def _classifier(ctx: WorkerContext) -> IntentClassifier:
    from pipeline.routing.factory import build_classifier

    classifier: IntentClassifier = ctx.shared("classifier", lambda: build_classifier(ctx.settings, _embedder(ctx)))
    return classifier


def _policy_levels(ctx: WorkerContext) -> RedisPolicyLevels:
    """The audit's state per tenant (policy level, counts), read through one local cache."""
    from pipeline.adapters.redis_audit import RedisPolicyLevels

    levels: RedisPolicyLevels = ctx.shared("policy_levels", lambda: RedisPolicyLevels(ctx.redis(), ctx.key_prefix()))
    return levels


def _semantic_cache(ctx: WorkerContext) -> SemanticCache:
    from pipeline.cache.factory import build_cache

    opinions = _classifier(ctx) if ctx.settings.cache_second_opinion else None
    return build_cache(ctx.settings, ctx.instance_id, RedisKbVersions(ctx.redis(), ctx.key_prefix()),
                       CacheMetrics(ctx.registry), embedder=_embedder(ctx), opinions=opinions,
                       levels=_policy_levels(ctx))


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
    from processors.cache import AuditSampling

    settings = ctx.settings
    audit = AuditSampling(_policy_levels(ctx), settings.cache_audit_share,
                          settings.cache_audit_max_width) if settings.cache_audit_share > 0 else None
    lookup = CacheLookup(cache, SystemClock(), PricingTable.load(settings.pricing_file), audit)
    # An embedded replica reads every update in a group of its own; a shared server, once.
    follower_name = "cache-index" if ctx.settings.qdrant_url else f"cache-index.{ctx.instance_id}"
    follower = CacheFollower(cache, follower_name)
    return [
        Binding(lookup.name, ("tickets.accepted",), "TicketSubmitted", TicketSubmitted.from_record,
                handle_batch=lookup.handle_batch),
        Binding(follower.name, ("cache.updates",), "CacheUpdate", CacheUpdate.from_record,
                handle_batch=follower.handle_batch),
    ]


def dry_run_processors(ctx: WorkerContext) -> tuple[CacheLookup, Router, Callable[[str], int]]:
    """What ``replay --dry-run`` runs in its own process: the cache lookup (no audit sampled)
    and the router (no metrics), built as a worker builds them, and the per-ticket cost cap
    of a budget profile (the agent stops a ticket at the lower of it and its cost limit)."""
    from pipeline.llm.pricing import PricingTable
    from pipeline.routing.engine import RouteEngine

    settings = ctx.settings
    cache: SemanticCache = ctx.shared("cache", lambda: _semantic_cache(ctx))
    lookup = CacheLookup(cache, SystemClock(), PricingTable.load(settings.pricing_file), None)
    router = Router(RouteEngine(_rulebook(ctx), _classifier(ctx)), _embedder(ctx), SystemClock(),
                    settings.agent_enabled)
    profiles = settings.budget_profiles

    def cap(profile: str) -> int:
        return min(profiles.get(profile, profiles.get("default", settings.agent_max_cost_micros)),
                   settings.agent_max_cost_micros)
    return lookup, router, cap


def _cache_writer(ctx: WorkerContext) -> list[Binding]:
    writer = CacheWriter(RedisKbVersions(ctx.redis(), ctx.key_prefix()), ctx.settings.cache_ttl_s,
                         ctx.settings.cache_never_keys)
    return [Binding(writer.name, ("tickets.responses",), "TicketResolved", TicketResolved.from_record,
                    handle_batch=per_record(writer.name, writer.handle))]


def _cache_audit(ctx: WorkerContext) -> list[Binding]:
    from pipeline.adapters.redis_audit import RedisAuditLedger
    from pipeline.cache.metrics import AuditMetrics
    from processors.cache_audit import CacheAuditor
    from processors.cache_feedback import CacheFeedbackApplier

    auditor = CacheAuditor(RedisAuditLedger(ctx.redis(), ctx.key_prefix()), SystemClock(),
                           ctx.settings.cache_audit_target, AuditMetrics(ctx.registry))
    feedback = CacheFeedbackApplier(SystemClock())
    return [
        Binding(auditor.name, ("tickets.replay.responses",), "TicketResolved", TicketResolved.from_record,
                handle_batch=per_record(auditor.name, auditor.handle), background=True),
        Binding(feedback.name, ("tickets.feedback",), "CacheFeedback", CacheFeedback.from_record,
                handle_batch=per_record(feedback.name, feedback.handle), allow_json=True, background=True),
    ]


def _router(ctx: WorkerContext) -> list[Binding]:
    from pipeline.routing.engine import RouteEngine

    embedder = _embedder(ctx)
    engine = RouteEngine(_rulebook(ctx), _classifier(ctx))
    registry = _tools(ctx)
    side_effecting = frozenset(n for n in registry.names() if registry.spec(n).side_effecting)
    processor = Router(engine, embedder, SystemClock(), ctx.settings.agent_enabled, RouterMetrics(ctx.registry),
                       side_effecting)
    results = RouterToolResults(_rulebook(ctx), SystemClock())
    return [
        Binding(processor.name, ("tickets.uncached",), "TicketSubmitted", TicketSubmitted.from_record,
                handle_batch=processor.handle_batch),
        Binding(results.name, ("tools.results",), "ToolResult", ToolResult.from_record,
                handle_batch=per_record(results.name, results.handle)),
    ]


def _tool_processor(ctx: WorkerContext) -> list[Binding]:
    settings = ctx.settings
    cache = RedisToolCache(ctx.redis(), ctx.key_prefix(), settings.tool_cache_ttl_s)
    runner = ctx.shared("tool_runner", lambda: ToolRunner(
        _tools(ctx), _rulebook(ctx), cache,
        RetrySchedule(max_attempts=settings.tool_max_attempts, base_s=0.05, cap_s=0.5),
        lambda tool: CircuitBreaker(settings.tool_breaker_failures, settings.tool_breaker_cooldown_s)))
    health = ctx.health
    processor = ToolProcessor(runner, SystemClock(), ToolMetrics(ctx.registry),
                              (lambda name: health.knows(name) and not health.up(name)) if health else None)
    invalidator = ToolCacheInvalidator(cache.invalidate)
    return [
        Binding(processor.name, ("tools.calls",), "ToolCall", ToolCall.from_record,
                handle_batch=per_record(processor.name, processor.handle)),
        Binding(invalidator.name, ("tools.invalidations",), "ToolInvalidation", ToolInvalidation.from_record,
                handle_batch=per_record(invalidator.name, invalidator.handle)),
    ]


def _agent(ctx: WorkerContext) -> list[Binding]:
    from pipeline.agent.aio import LaneGate, LoopThread
    from pipeline.agent.factory import build_runner
    from pipeline.agent.metrics import AgentMetrics
    from processors.agent import AgentProcessor, AgentToolResults, usage_workflow

    settings = ctx.settings
    runner = build_runner(settings, ctx.redis(), _tools(ctx), _rulebook(ctx).intents())
    loop = ctx.shared("llm_loop", LoopThread)
    gate = LaneGate(settings.agent_interactive_concurrency, settings.agent_batch_concurrency)
    metrics = AgentMetrics(ctx.registry)
    runner.on_paid = lambda step, model, reply, cost: metrics.paid(step.tenant_id, usage_workflow(step), model,
                                                                   reply, cost)
    bindings = []
    for lane in ("interactive", "batch"):
        processor = AgentProcessor(lane, runner, loop, gate, SystemClock(), _tools(ctx), _rulebook(ctx), metrics)
        # Pipelined: steps start as they arrive and commit as they finish (in offset order).
        in_flight = settings.agent_interactive_concurrency if lane == "interactive" else 4 * gate.batch_concurrency
        bindings.append(Binding(processor.name, (f"agent.steps.{lane}",), "AgentStep", AgentStep.from_record,
                                start=processor.start, finish=processor.finish,
                                max_in_flight=in_flight))
    results = AgentToolResults(SystemClock())
    bindings.append(Binding(results.name, ("tools.results",), "ToolResult", ToolResult.from_record,
                            handle_batch=per_record(results.name, results.handle)))
    return bindings


def _egress_json(ctx: WorkerContext) -> list[Binding]:
    from processors.egress_json import JsonEgress

    egress = JsonEgress()
    return [Binding(egress.name, ("tickets.responses",), "TicketResolved", TicketResolved.from_record,
                    handle_batch=per_record(egress.name, egress.handle))]


def _accounting(ctx: WorkerContext) -> list[Binding]:
    from pipeline.adapters.redis_costs import RedisCostWindows
    from processors.accounting import TicketCosts, UsageAggregator

    settings = ctx.settings
    tickets = TicketCosts()
    usage = UsageAggregator(RedisCostWindows(ctx.redis(), ctx.key_prefix()),
                            lambda tenant: settings.tenant_budgets.get(tenant, settings.tenant_daily_budget_micros))
    return [
        Binding(tickets.name, ("tickets.responses", "tickets.replay.responses"), "TicketResolved",
                TicketResolved.from_record, handle_batch=per_record(tickets.name, tickets.handle),
                background=True),
        Binding(usage.name, ("llm.usage",), "UsageRecord", UsageRecord.from_record,
                handle_batch=usage.handle_batch, background=True),
    ]


PROCESSORS: dict[str, Callable[[WorkerContext], list[Binding]]] = {
    "intake": _intake,
    "cache": _cache,
    "cache-writer": _cache_writer,
    "cache-audit": _cache_audit,
    "router": _router,
    "tools": _tool_processor,
    "agent": _agent,
    "accounting": _accounting,
    "egress-json": _egress_json,
}
#: Processors a worker runs only when named, or switched on by a setting.
OPT_IN = {"egress-json": "json_egress"}


def bindings(ctx: WorkerContext, names: list[str] | None = None) -> list[Binding]:
    chosen = names or [n for n in PROCESSORS if n not in OPT_IN or getattr(ctx.settings, OPT_IN[n])]
    unknown = [n for n in chosen if n not in PROCESSORS]
    if unknown:
        raise ConfigurationError(
            f"unknown processor(s) {', '.join(unknown)}; known: {', '.join(PROCESSORS)}"
        )
    return [binding for name in chosen for binding in PROCESSORS[name](ctx)]
