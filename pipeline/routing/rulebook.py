"""Rules as typed values, checked against the tools and templates they use.

:func:`load_rules` (rules_file.py) checks the file's shape; :meth:`RuleBook.load` then checks
what the shape cannot: every tool exists, a tool rule's arguments are the tool's parameters,
and every ``{placeholder}`` of a template or an argument is a value the rule will have (an
entity its ``when`` requires, the intent, or a field of its tool's result). A mistake is
reported at start-up with the file and line, never as a broken answer to a customer.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigurationError
from pipeline.routing.rules_file import load_rules
from pipeline.tools.registry import ToolRegistry

Action = Literal["template", "tool", "agent"]
ALWAYS = frozenset({"intent"})


def placeholders(text: str) -> list[str]:
    """The ``{names}`` in ``text``; only plain names (no attributes, indexes, conversions)."""
    names = []
    for _, field_name, spec, conversion in string.Formatter().parse(text):
        if field_name is None:
            continue
        if not field_name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{field_name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} must be a plain name")
        names.append(field_name)
    return names


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with its placeholders filled from ``values`` (checked at load: all present)."""
    return text.format_map(dict(values))


@dataclass(frozen=True)
class Rule:
    name: str
    line: int
    action: Action
    intent: str | None = None  # None: any intent, abstentions included
    entities: tuple[str, ...] = ()
    template: str | None = None
    tool: str | None = None
    arguments: tuple[tuple[str, str], ...] = ()
    lane: Literal["interactive", "batch"] = "interactive"
    tier: Literal["cheap", "mid", "strong"] = "cheap"
    budget: str = "default"
    tools: tuple[str, ...] = ()
    tool_calls: int = 1  # agent: tool calls a ticket may make; then its steps are offered no tools
    classify: bool = False  # agent: the first step only picks the intent; the rules take it from there

    @property
    def allowed_tools(self) -> frozenset[str]:
        if self.action == "tool" and self.tool:
            return frozenset({self.tool})
        if self.action == "agent":
            return frozenset(self.tools)
        return frozenset()

    @property
    def generic(self) -> bool:
        """A template answer that names nothing of the customer's own (cacheable)."""
        return self.action == "template" and not (set(placeholders(self.template or "")) - ALWAYS)

    def matches(self, intent: str | None, values: Mapping[str, str]) -> bool:
        if self.intent is not None and self.intent != intent:
            return False
        return all(kind in values for kind in self.entities)


def _rule_lines(path: Path) -> list[int]:
    node = yaml.compose(path.read_text(encoding="utf-8"))
    assert isinstance(node, yaml.MappingNode)
    for key, value in node.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


class RuleBook:
    def __init__(self, rules: list[Rule], source: str = "<rules>") -> None:
        self.rules = rules
        self.source = source
        self._by_name = {rule.name: rule for rule in rules}

    @classmethod
    def load(cls, path: Path, tools: ToolRegistry) -> RuleBook:
        document = load_rules(path)
        lines = _rule_lines(path)
        rules = []
        for index, raw in enumerate(document["rules"]):
            line = lines[index] if index < len(lines) else 1
            rule = _rule(raw, line)
            problems = _check(rule, tools)
            if problems:
                raise ConfigurationError("\n".join(f"{path}:{line}: rule {rule.name}: {p}" for p in problems))
            rules.append(rule)
        return cls(rules, str(path))

    def rule(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def match(self, intent: str | None, values: Mapping[str, str]) -> Rule | None:
        """The first rule, in file order, whose conditions hold."""
        return next((rule for rule in self.rules if rule.matches(intent, values)), None)

    def allowed_tools(self, route: str) -> frozenset[str] | None:
        rule = self._by_name.get(route)
        return None if rule is None else rule.allowed_tools

    def intents(self) -> set[str]:
        return {rule.intent for rule in self.rules if rule.intent is not None}


def _rule(raw: dict[str, Any], line: int) -> Rule:
    when = raw.get("when") or {}
    return Rule(
        name=raw["name"], line=line, action=raw["action"], intent=when.get("intent"),
        entities=tuple(when.get("entities", ())), template=raw.get("template"), tool=raw.get("tool"),
        arguments=tuple(sorted((raw.get("arguments") or {}).items())), lane=raw.get("lane", "interactive"),
        tier=raw.get("tier", "cheap"), budget=raw.get("budget", "default"), tools=tuple(raw.get("tools", ())),
        tool_calls=raw.get("tool_calls", 1), classify=raw.get("classify", False),
    )


def _check(rule: Rule, tools: ToolRegistry) -> list[str]:
    problems: list[str] = []
    known = set(tools.names())
    available = set(rule.entities) | ALWAYS
    for name in rule.tools:
        if name not in known:
            problems.append(f"tools: no tool named {name!r} (known: {', '.join(sorted(known))})")
    result_fields: set[str] = set()
    if rule.action == "tool":
        if rule.tool not in known:
            problems.append(f"tool: no tool named {rule.tool!r} (known: {', '.join(sorted(known))})")
        else:
            spec = tools.spec(rule.tool)
            result_fields = set(spec.returns)
            parameters = set(spec.parameters.get("properties", {}))
            required = set(spec.parameters.get("required", []))
            given = {name for name, _ in rule.arguments}
            for name in sorted(given - parameters):
                problems.append(f"arguments: {rule.tool} takes no argument {name!r}")
            for name in sorted(required - given):
                problems.append(f"arguments: {rule.tool} needs argument {name!r}")
            for name, value in rule.arguments:
                problems.extend(_unavailable(f"arguments/{name}", value, available))
    if rule.template is not None:
        problems.extend(_unavailable("template", rule.template, available | result_fields))
    return problems


def _unavailable(where: str, text: str, available: set[str]) -> list[str]:
    try:
        names = placeholders(text)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    return [f"{where}: {{{name}}} is not available here (the rule's entities, its tool's result "
            f"fields and 'intent' are; add '{name}' to when/entities if it is an entity)"
            for name in names if name not in available]
