"""The router's decision for one ticket: intent, entities, the first matching rule, the action.

Pure and deterministic given the ticket, its embedding, the rule book and the examples, so
that a replay routes every ticket the same way and ``ticketflow route explain`` shows
exactly what the processor did. No I/O here: the processor sends tool calls and agent steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.routing.classifier import IntentClassifier, IntentDecision
from pipeline.routing.entities import Entity, extract
from pipeline.routing.rulebook import Rule, RuleBook, render

Kind = Literal["template", "tool", "agent", "escalate"]
DEFLECTING: frozenset[str] = frozenset({"template", "tool"})  # answered without an LLM


@dataclass(frozen=True)
class RouteDecision:
    kind: Kind
    intent: IntentDecision
    entities: list[Entity]
    values: dict[str, str]  # what templates and arguments may use (first entity of each kind)
    rule: Rule | None = None
    answer: str | None = None  # template: the rendered answer
    arguments: dict[str, str] = field(default_factory=dict)  # tool: the rendered arguments
    reason: str = ""

    @property
    def deflected(self) -> bool:
        return self.kind in DEFLECTING

    def explain(self) -> dict[str, Any]:
        """Everything that went into the decision, for people and for ``--json``."""
        rule = self.rule
        return {
            "action": self.kind,
            "reason": self.reason,
            "intent": self.intent.intent,
            "intent_reason": self.intent.reason,
            "nearest_intent": self.intent.nearest,
            "similarity": None if self.intent.similarity is None else round(self.intent.similarity, 4),
            "entities": [{"kind": e.kind, "value": e.value, "span": list(e.span)} for e in self.entities],
            "rule": None if rule is None else {
                "name": rule.name, "line": rule.line, "when_intent": rule.intent, "when_entities": list(rule.entities),
                "action": rule.action, "tool": rule.tool, "lane": rule.lane if rule.action == "agent" else None,
                "tier": rule.tier if rule.action == "agent" else None,
                "budget": rule.budget if rule.action == "agent" else None,
                "allowed_tools": sorted(rule.allowed_tools)},
            "arguments": self.arguments or None,
            "answer": self.answer,
        }


def entity_values(entities: list[Entity], customer_id: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for entity in entities:
        values.setdefault(entity.kind, entity.value)
    if customer_id:
        values["customer_id"] = customer_id
    return values


class RouteEngine:
    def __init__(self, book: RuleBook, classifier: IntentClassifier) -> None:
        self.book = book
        self.classifier = classifier

    def decide_many(self, items: Sequence[tuple[str, str, str | None, date]],
                    vectors: npt.NDArray[np.float32]) -> list[RouteDecision]:
        """Decisions for (classifier text, original text, customer id, day) with the classifier
        texts' embeddings. The classifier sees the PII-redacted text; entities come from the
        original (the router needs the card's last digits that redaction removes)."""
        intents = self.classifier.classify([text for text, _, _, _ in items], vectors)
        return [self.decide_with(intent, original, customer, today)
                for intent, (_, original, customer, today) in zip(intents, items, strict=True)]

    def decide_with(self, intent: IntentDecision, original: str, customer_id: str | None,
                    today: date) -> RouteDecision:
        return route(self.book, intent, original, customer_id, today)


def route(book: RuleBook, intent: IntentDecision, original: str, customer_id: str | None,
          today: date) -> RouteDecision:
    """The first matching rule for an intent decision (the classifier's, or the agent's when
    the classifier abstained), with the entities of the original text."""
    entities = extract(original, today)
    values = entity_values(entities, customer_id)
    if intent.intent is not None:
        values["intent"] = intent.intent
    rule = book.match(intent.intent, values)
    if rule is None:
        why = f"no rule for intent {intent.intent}" if intent.intent else f"intent unclear ({intent.reason})"
        return RouteDecision("escalate", intent, entities, values, reason=f"no_route: {why}")
    scope = {**values, "intent": values.get("intent", rule.intent or "unknown")}
    what = f"rule {rule.name} (line {rule.line})"
    if rule.action == "template":
        assert rule.template is not None
        return RouteDecision("template", intent, entities, values, rule, answer=render(rule.template, scope),
                             reason=what)
    if rule.action == "tool":
        arguments = {name: render(value, scope) for name, value in rule.arguments}
        return RouteDecision("tool", intent, entities, values, rule, arguments=arguments,
                             reason=f"{what}: call {rule.tool}")
    return RouteDecision("agent", intent, entities, values, rule,
                         reason=f"{what}: agent, {rule.tier} tier, {rule.lane} lane")
