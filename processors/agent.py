"""Agent: one LLM step per ``AgentStep``; tool calls out on ``tools.calls``, results back as
the next step; a final answer is a ``TicketResolved`` with path ``agent``.

A route that says ``classify`` (the fallback, where the router's classifier abstained) has
a first step that only picks the intent among the router's shortlist (structured output:
key and confidence, a few tokens); that intent's rule answers with its template, or the
agent goes on with the intent known (a lookup, a judgement route). The cascade judges the
pick as it judges an answer.

A tool call's ``customer_id`` is the ticket's, set by code (the model is not shown the
parameter): the agent cannot look up or act for another customer.

Reads ``agent.steps.interactive`` and ``agent.steps.batch`` (one consumer group each, so the
lanes never queue behind each other). Steps run concurrently on the worker's event loop
(``start``; ``finish`` turns a finished run into its outputs): hundreds of calls in flight
per worker, and the runtime commits each step's outputs with its offset in offset order, so
no offset is committed past an unfinished step. A step that runs again after a crash reuses
its recorded LLM result (:mod:`pipeline.agent.runner`), so it is neither billed nor
answered twice.

Every LLM call yields a ``UsageRecord`` (failed attempts too, at zero cost); the ticket's
``TicketResolved`` carries its tokens, cost, steps, models and the answering call's time
to first token.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from concurrent.futures import Future

from pipeline.agent.aio import LaneGate, LoopThread
from pipeline.agent.machine import Final, UseTool
from pipeline.agent.metrics import AgentMetrics
from pipeline.agent.prompt import bind_arguments, classifying
from pipeline.agent.runner import CallRecord, StepRun, StepRunner
from pipeline.cache.audit import AUDIT_WORKFLOW, is_audit
from pipeline.events import AgentStep, Message, TicketResolved, TicketSubmitted, ToolCall, ToolResult, UsageRecord
from pipeline.processing import Clock, Emit, Outcome, Output
from pipeline.replay.tags import run_id
from pipeline.routing.classifier import IntentDecision
from pipeline.routing.engine import route
from pipeline.routing.rulebook import RuleBook
from pipeline.serde import pack, unpack
from pipeline.tools.registry import ToolRegistry
from processors.escalation import HANDOFF_ANSWER, stage_latencies
from processors.router import carried_embedding, original_text, ticket_day

log = logging.getLogger(__name__)


class AgentProcessor:
    def __init__(self, lane: str, runner: StepRunner, loop: LoopThread, gate: LaneGate, clock: Clock,
                 tools: ToolRegistry, book: RuleBook, metrics: AgentMetrics | None = None) -> None:
        self.book = book  # a classifying step's intent goes to its rule
        self.tools = tools  # for the parameters bound from the ticket (customer_id)
        self.lane = lane
        self.metrics = metrics
        self.name = "agent" if lane == "interactive" else f"agent-{lane}"
        self.runner = runner
        self.loop = loop
        self.gate = gate
        self.clock = clock

    def start(self, step: AgentStep, origin: str) -> Future[StepRun]:
        """Begin the step on the worker's event loop (the pipelined binding)."""
        return self.loop.submit(self.gate.run(self.lane, self.runner.run(step)))

    def finish(self, step: AgentStep, run: StepRun) -> Outcome:
        """The outputs of a finished step: usage records, then the tool call or the resolution."""
        now = self.clock.now_ms()
        queued = max(step.stage_times.values(), default=run.started_ms or now)  # when this step was queued
        if self.metrics is not None:
            self.metrics.observe(step.tenant_id, usage_workflow(step), run.calls, run.tier, run.escalation)
            self.metrics.waited(self.lane, max(0, (run.started_ms or now) - queued) / 1000)
        outputs = [Output("llm.usage", step.tenant_id, record) for record in usage_records(step, run.calls, now)]
        served = [c for c in run.calls if c.response is not None]
        totals = dataclasses.replace(
            step,
            tokens_in=step.tokens_in + sum(c.response.tokens_in for c in served if c.response),
            tokens_out=step.tokens_out + sum(c.response.tokens_out for c in served if c.response),
            tokens_cached=step.tokens_cached + sum(c.response.tokens_cached for c in served if c.response),
            cost_micros=step.cost_micros + sum(c.cost_micros for c in run.calls),
            models=step.models + [c.model for c in served],
            # when the step began, past its lane's queue: the ticket's stage latencies show the wait
            stage_times={**step.stage_times, f"agent-start:{step.step}": run.started_ms or now},
        )
        ticket = unpack(step.ticket, TicketSubmitted)
        action = run.action
        if isinstance(action, UseTool):
            call = action.call
            assistant = Message("assistant", "", tool_call_id=call.call_id, tool_name=call.name,
                                tool_arguments=call.arguments)
            following = dataclasses.replace(
                totals, step=step.step + 1, step_id=f"{run_id(step.ticket_id, step.replay_tag)}:{step.step + 1}",
                transcript=[*step.transcript, assistant], model_tier=step.model_tier,
                stage_times={**totals.stage_times, f"agent:{step.step}": now})
            arguments = bind_arguments(call.arguments, self.tools.spec(call.name),
                                       {"customer_id": ticket.customer_id})
            tool_call = ToolCall(call_id=f"{step.step_id}:{call.name}", ticket_id=step.ticket_id,
                                 tenant_id=step.tenant_id, tool=call.name, arguments=arguments,
                                 route=step.workflow, reply_to="agent", requested_at=now, step=pack(following))
            outputs.append(Output("tools.calls", step.ticket_id, tool_call))
            return Emit(tuple(outputs))
        answering = served[-1] if served else None
        if isinstance(action, Final) and classifying(step):
            outputs.append(self.classified(step, totals, run, action, ticket, now, answering))
            return Emit(tuple(outputs))
        resolved = _resolution(ticket, totals, run, now, answering)
        outputs.append(Output("tickets.responses", step.ticket_id, resolved))
        return Emit(tuple(outputs))

    def classified(self, step: AgentStep, totals: AgentStep, run: StepRun, action: Final, ticket: TicketSubmitted,
                   now: int, answering: CallRecord | None) -> Output:
        """After a classifying step: the picked intent's rule answers (a template, no further
        LLM call), or the agent goes on with the intent known (a lookup or judgement route)."""
        key = action.resolution_key
        decision = route(self.book, IntentDecision(key, "agent", None, key, (key,)), original_text(ticket),
                         ticket.customer_id, ticket_day(ticket, now))
        rule = decision.rule
        if decision.kind == "template" and rule is not None and decision.answer:
            answered = dataclasses.replace(run, action=Final(key, decision.answer, action.confidence))
            resolved = dataclasses.replace(_resolution(ticket, totals, answered, now, answering),
                                           cacheable=rule.generic)
            return Output("tickets.responses", step.ticket_id, resolved)
        if decision.kind == "escalate" or rule is None:
            refused = dataclasses.replace(run, action=None, escalation=decision.reason)
            return Output("tickets.responses", step.ticket_id, _resolution(ticket, totals, refused, now, answering))
        following = dataclasses.replace(
            totals, step=step.step + 1, step_id=f"{run_id(step.ticket_id, step.replay_tag)}:{step.step + 1}",
            stage_times={**totals.stage_times, f"agent:{step.step}": now},
            intent=key, candidates=[key], classify=False)
        if decision.kind == "agent":  # a judgement route: its tools, tier and budget from now on
            following = dataclasses.replace(following, route=rule.name, tool_call_cap=rule.tool_calls)
            tier: str = rule.tier
            tools = sorted(rule.allowed_tools)
            if is_audit(step.replay_tag):  # the audit keeps its strong model and never changes state
                tier, tools = step.model_tier, [t for t in tools if not self.tools.spec(t).side_effecting]
            following = dataclasses.replace(following, workflow=rule.name, model_tier=tier, allowed_tools=tools,
                                            budget_profile=rule.budget)
        return Output(f"agent.steps.{step.lane}", step.ticket_id, following)


def _resolution(ticket: TicketSubmitted, totals: AgentStep, run: StepRun, now: int,
                answering: CallRecord | None) -> TicketResolved:
    created = ticket.created_at if ticket.created_at is not None else now
    timed = dataclasses.replace(ticket, stage_times=totals.stage_times)
    common = dict(
        ticket_id=ticket.ticket_id, tenant_id=ticket.tenant_id, customer_id=ticket.customer_id, lane=ticket.lane,
        created_at=created, resolved_at=now, models=totals.models, steps=totals.step + 1,
        tokens_in=totals.tokens_in, tokens_out=totals.tokens_out, tokens_cached=totals.tokens_cached,
        cost_micros=totals.cost_micros, stage_latency_ms=stage_latencies(timed, "agent", now),
        end_to_end_ms=float(max(0, now - created)), replay_tag=ticket.replay_tag,
        ttft_ms=answering.response.ttft_ms if answering and answering.response else None,
    )
    if isinstance(run.action, Final):
        looked_up = any(m.role == "tool" for m in totals.transcript)
        return TicketResolved(answer=run.action.answer, path="agent", resolution_key=run.action.resolution_key,
                              cacheable=not looked_up, cache_text=ticket.cache_text,
                              confidence=run.action.confidence, **carried_embedding(ticket, not looked_up),
                              **common)  # type: ignore[arg-type]
    return TicketResolved(answer=HANDOFF_ANSWER, path="escalated", escalation_reason=run.escalation or "agent",
                          **common)  # type: ignore[arg-type]


def usage_workflow(step: AgentStep) -> str:
    """The workflow a call is accounted to: the cache audit's calls are its own workflow."""
    return AUDIT_WORKFLOW if is_audit(step.replay_tag) else step.workflow


def usage_records(step: AgentStep, calls: Sequence[CallRecord], now: int) -> list[UsageRecord]:
    """One record per served call (a reused result keeps its id: it is the same call) and one
    per failed attempt, at zero cost."""
    records = []
    for call in calls:
        for attempt, error in enumerate(call.failures, start=1):
            records.append(UsageRecord(
                record_id=f"{call.call_key}:failed:{attempt}", ticket_id=step.ticket_id, tenant_id=step.tenant_id,
                workflow=usage_workflow(step), step=step.step_id, kind="llm", provider=call.provider,
                model=call.model,
                occurred_at=now, outcome=error, attempt=attempt))
        response = call.response
        if response is None:
            continue
        records.append(UsageRecord(
            record_id=call.call_key, ticket_id=step.ticket_id, tenant_id=step.tenant_id, workflow=usage_workflow(step),
            step=step.step_id, kind="llm", provider=response.provider, model=call.model, occurred_at=now,
            tokens_in=response.tokens_in, tokens_out=response.tokens_out, tokens_cached=response.tokens_cached,
            cost_micros=call.cost_micros, latency_ms=response.latency_ms, ttft_ms=response.ttft_ms,
            outcome="ok", attempt=max(1, call.attempts)))
    return records


class AgentToolResults:
    """A tool's result for the agent becomes the next step of its workflow."""

    name = "agent-results"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def handle(self, result: ToolResult, origin: str) -> Outcome:
        if result.reply_to != "agent" or result.step is None:
            return Emit()
        step = unpack(result.step, AgentStep)
        asked = step.transcript[-1] if step.transcript else None
        content = result.result if result.ok and result.result is not None else json.dumps(
            {"error": result.error_class, "message": result.error_message})
        message = Message("tool", content or "{}", tool_call_id=asked.tool_call_id if asked else result.call_id,
                          tool_name=result.tool)
        following = dataclasses.replace(step, transcript=[*step.transcript, message],
                                        stage_times={**step.stage_times, f"tools:{step.step}": result.completed_at})
        return Emit((Output(f"agent.steps.{step.lane}", step.ticket_id, following),))
