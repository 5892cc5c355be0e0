"""Router: resolve a ticket the cache did not answer by rules, a tool, or hand it to the agent.

Reads ``tickets.uncached``. The texts of a consumed batch are embedded together in
``prepare``; per ticket the route engine decides (intent, entities, first matching rule):

- ``template``: a ``TicketResolved`` with path ``rule`` at once (cacheable when the answer
  names nothing of the customer's own);
- ``tool``: a ``ToolCall`` on ``tools.calls`` with the ticket as its state; the answer comes
  when the result is back (:class:`RouterToolResults`, on ``tools.results``), path ``tool``;
- ``agent``: the first ``AgentStep`` on ``agent.steps.<lane>`` with the rule's model tier,
  budget profile and tool allowlist (or, while no agent runs, an escalation saying so);
- no rule: escalated with reason ``no_route`` and why.

Every decision is deterministic for the ticket, the rules and the examples: a replay routes
the same way.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol

import numpy as np

from pipeline.cache.audit import is_audit
from pipeline.cache.embedder import Vectors
from pipeline.events import (
    AgentStep,
    Message,
    TicketResolved,
    TicketSubmitted,
    ToolCall,
    ToolResult,
)
from pipeline.processing import Clock, Emit, Outcome, Output
from pipeline.replay.tags import run_id
from pipeline.routing.engine import RouteDecision, RouteEngine, entity_values
from pipeline.routing.entities import extract
from pipeline.routing.metrics import RouterMetrics
from pipeline.routing.rulebook import RuleBook, render
from pipeline.serde import pack, unpack
from pipeline.tools.registry import canonical
from processors.cache import cache_text
from processors.escalation import escalate, stage_latencies

NO_ROUTE = "no_route"
AGENT_UNAVAILABLE = "agent_unavailable"


class Encoder(Protocol):
    """What the router needs of an embedder (the worker's micro-batcher)."""

    name: str
    dim: int

    def encode_sorted(self, texts: Sequence[str]) -> Vectors: ...


def first_step(ticket: TicketSubmitted, workflow: str, lane: Literal["interactive", "batch"], tier: str,
               tools: list[str], budget: str, facts: Mapping[str, Any]) -> AgentStep:
    """The first ``AgentStep`` of a ticket: the router's facts (AgentStep's typed fields, as
    :func:`agent_facts` gives them) and the ticket's own text."""
    return AgentStep(step_id=f"{run_id(ticket.ticket_id, ticket.replay_tag)}:0", ticket_id=ticket.ticket_id,
                     tenant_id=ticket.tenant_id,
                     workflow=workflow, step=0, ticket=pack(ticket), lane=lane, model_tier=tier,
                     allowed_tools=tools, budget_profile=budget,
                     transcript=[Message("user", original_text(ticket))],
                     stage_times=ticket.stage_times, replay_tag=ticket.replay_tag, **facts)


def agent_facts(decision: RouteDecision) -> dict[str, Any]:
    """What the agent is told of the router's decision (AgentStep's typed facts): route, intent
    (None: abstained), how many tool calls the route allows, the shortlist of candidate
    intents (nearest first), whether the customer is signed in and the entities found. Not
    the customer's id: the agent's tool calls get it from the ticket
    (:func:`pipeline.agent.prompt.bind_arguments`), so the provider never needs it."""
    entities = {k: str(v) for k, v in decision.values.items() if k not in ("intent", "customer_id")}
    return {"route": decision.rule.name if decision.rule else None, "intent": decision.intent.intent,
            "tool_call_cap": decision.rule.tool_calls if decision.rule else 0,
            "classify": bool(decision.rule and decision.rule.classify),
            "candidates": list(decision.intent.candidates), "signed_in": "customer_id" in decision.values,
            "entities": entities}


def original_text(ticket: TicketSubmitted) -> str:
    """The ticket as the customer wrote it: entities come from here, never from the cache copy."""
    return f"{ticket.subject}\n{ticket.body}" if ticket.subject else ticket.body


def ticket_day(ticket: TicketSubmitted, now_ms: int) -> date:
    """The day relative dates ("yesterday") count from: the ticket's own, so a replay agrees."""
    stamp = ticket.created_at if ticket.created_at is not None else now_ms
    return datetime.fromtimestamp(stamp / 1000, UTC).date()


def router_call_id(ticket_id: str, tool: str) -> str:
    return f"{ticket_id}:router:{tool}"


class Router:
    name = "router"

    def __init__(self, engine: RouteEngine, encoder: Encoder, clock: Clock, agent_enabled: bool,
                 metrics: RouterMetrics | None = None, side_effecting: frozenset[str] = frozenset()) -> None:
        self.engine = engine
        self.side_effecting = side_effecting  # tools an audit ticket is never offered
        self.encoder = encoder
        self.clock = clock
        self.agent_enabled = agent_enabled
        self.metrics = metrics
        self.encoded = 0  # tickets this router had to embed itself (no usable cache-stage vector)
        self._decisions: dict[str, RouteDecision] = {}

    def decide(self, tickets: Sequence[TicketSubmitted]) -> list[RouteDecision]:
        now = self.clock.now_ms()
        texts = [cache_text(t) for t in tickets]  # PII-redacted by intake (or by cache_text)
        vectors = self._vectors(tickets, texts)
        items = [(text, original_text(t), t.customer_id, ticket_day(t, now)) for text, t in zip(texts, tickets,
                                                                                                 strict=True)]
        started = time.perf_counter()
        decisions = self.engine.decide_many(items, vectors)
        if self.metrics is not None:
            per_ticket = (time.perf_counter() - started) / max(1, len(items))
            for decision in decisions:
                self.metrics.observe(decision)
                self.metrics.decision_seconds.observe(per_ticket)
        return decisions

    def _vectors(self, tickets: Sequence[TicketSubmitted], texts: list[str]) -> Vectors:
        """The cache stage's embeddings where they came along (same model), the rest encoded now."""
        vectors = np.zeros((len(tickets), self.encoder.dim), dtype=np.float32)
        missing = []
        for i, ticket in enumerate(tickets):
            if ticket.embedding is not None and ticket.embedding_model == self.encoder.name \
                    and len(ticket.embedding) == 4 * self.encoder.dim:
                vectors[i] = np.frombuffer(ticket.embedding, dtype="<f4")
            else:
                missing.append(i)
        if missing:
            vectors[missing] = self.encoder.encode_sorted([texts[i] for i in missing])
        self.encoded += len(missing)
        return vectors

    def handle_batch(self, batch: Sequence[tuple[TicketSubmitted, str]]) -> list[Outcome]:
        """The batch's decisions at once (one embedding batch for what the cache stage did not send)."""
        decisions = self.decide([ticket for ticket, _ in batch]) if batch else []
        return [self._route(ticket, decision) for (ticket, _), decision in zip(batch, decisions, strict=True)]

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        """One ticket (a batch of one)."""
        return self.handle_batch([(ticket, origin)])[0]

    def _route(self, ticket: TicketSubmitted, decision: RouteDecision) -> Outcome:
        now = self.clock.now_ms()
        rule = decision.rule
        if decision.kind == "escalate" or rule is None:
            resolved = escalate(ticket, decision.reason or NO_ROUTE, self.name, now)
            return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))
        key = rule.intent or rule.name
        if decision.kind == "template":
            assert decision.answer is not None
            resolved = _resolved(ticket, decision.answer, "rule", key, self.name, now)
            resolved = dataclasses.replace(resolved, cacheable=rule.generic, **carried_embedding(ticket, rule.generic))
            return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))
        # the state carried on; the embedding (1.5 KB) only to the agent, whose answer hands it to
        # the cache writer (a direct tool answer is never cached)
        stamped = dataclasses.replace(ticket, stage_times={**ticket.stage_times, self.name: now})
        bare = dataclasses.replace(stamped, embedding=None, embedding_model=None)
        if decision.kind == "tool":
            assert rule.tool is not None
            call = ToolCall(call_id=router_call_id(run_id(ticket.ticket_id, ticket.replay_tag), rule.tool),
                            ticket_id=ticket.ticket_id,
                            tenant_id=ticket.tenant_id, tool=rule.tool, arguments=canonical(decision.arguments),
                            route=rule.name, reply_to="router", requested_at=now, step=pack(bare))
            return Emit((Output("tools.calls", ticket.ticket_id, call),))
        if not self.agent_enabled:
            resolved = escalate(ticket, f"{AGENT_UNAVAILABLE}: route {rule.name}", self.name, now)
            return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))
        lane = "batch" if ticket.lane == "batch" else rule.lane
        tier, tools = rule.tier, sorted(rule.allowed_tools)
        if is_audit(ticket.replay_tag):
            # The audit's judge: the strongest model, and nothing that changes a customer's state.
            tier, tools = "strong", [t for t in tools if t not in self.side_effecting]
        step = first_step(stamped, rule.name, lane, tier, tools, rule.budget, agent_facts(decision))
        return Emit((Output(f"agent.steps.{lane}", ticket.ticket_id, step),))


class RouterToolResults:
    """The second half of a ``tool`` route: the tool's result becomes the answer."""

    name = "router-results"

    def __init__(self, book: RuleBook, clock: Clock) -> None:
        self.book = book
        self.clock = clock

    def handle(self, result: ToolResult, origin: str) -> Outcome:
        if result.reply_to != "router":
            return Emit()  # the agent's: it continues from there
        if result.step is None:
            return Emit(note="no_ticket_state")  # cannot happen for the router's own calls
        ticket = unpack(result.step, TicketSubmitted)
        now = self.clock.now_ms()
        ticket = dataclasses.replace(ticket, stage_times={**ticket.stage_times, "tools": result.completed_at})
        rule = self.book.rule(result.route)
        if rule is None or rule.template is None:
            return _escalated(ticket, f"no_route: rule {result.route!r} is no longer in the rules", now)
        if not result.ok:
            reason = f"tool_failed: {result.tool}: {result.error_class}: {result.error_message or ''}".rstrip(": ")
            return _escalated(ticket, reason[:500], now)
        values = entity_values(extract(original_text(ticket), ticket_day(ticket, now)), ticket.customer_id)
        values["intent"] = rule.intent or rule.name
        try:
            data = json.loads(result.result or "{}")
            values.update({k: str(v) for k, v in data.items()})
            answer = render(rule.template, values)
        except (json.JSONDecodeError, AttributeError, KeyError) as exc:
            return _escalated(ticket, f"tool_failed: {result.tool}: result lacks {exc}", now)
        resolved = _resolved(ticket, answer, "tool", rule.intent or rule.name, "answer", now)
        return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))


def _escalated(ticket: TicketSubmitted, reason: str, now: int) -> Emit:
    resolved = escalate(ticket, reason, "answer", now)
    return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))


def carried_embedding(ticket: TicketSubmitted, cacheable: bool) -> dict[str, Any]:
    """The cache stage's embedding, for a resolution the cache writer may write back: its
    replicas then store the vector instead of encoding the text again (1.5 KB, only then)."""
    if not cacheable or ticket.embedding is None:
        return {}
    return {"embedding": ticket.embedding, "embedding_model": ticket.embedding_model}


def _resolved(ticket: TicketSubmitted, answer: str, path: str, key: str, stage: str, now: int) -> TicketResolved:
    created = ticket.created_at if ticket.created_at is not None else now
    return TicketResolved(
        ticket_id=ticket.ticket_id, tenant_id=ticket.tenant_id, customer_id=ticket.customer_id, lane=ticket.lane,
        answer=answer, path=path, resolution_key=key,  # type: ignore[arg-type]
        created_at=created, resolved_at=now, stage_latency_ms=stage_latencies(ticket, stage, now),
        end_to_end_ms=float(max(0, now - created)), replay_tag=ticket.replay_tag, cache_text=cache_text(ticket))
