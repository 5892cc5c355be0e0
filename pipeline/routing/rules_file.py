"""The router's rules file: versioned YAML, checked at start-up with file, line and reason.

A rule says when it applies (an intent, entities that must be present) and what to do:
answer from a ``template``, call a ``tool`` then answer from a template, or hand over to the
``agent`` with a lane, a model tier, a budget profile and the tools it may use. Every error
names the file, the line and what is wrong, e.g.::

    rules.yaml:14: rules/2/action: 'email' is not one of ['template', 'tool', 'agent']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pipeline.errors import ConfigurationError

RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "rules"],
    "properties": {
        "version": {"const": 1},
        "rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/rule"}},
    },
    "$defs": {
        "rule": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "when", "action"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                "when": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "intent": {"type": "string"},
                        "entities": {"type": "array", "items": {"enum": [
                            "order_id", "transfer_id", "card_last4", "amount", "date", "email", "customer_id"]}},
                    },
                },
                "action": {"enum": ["template", "tool", "agent"]},
                "template": {"type": "string", "minLength": 1},
                "tool": {"type": "string"},
                "arguments": {"type": "object", "additionalProperties": {"type": "string"}},
                "lane": {"enum": ["interactive", "batch"]},
                "tier": {"enum": ["cheap", "mid", "strong"]},
                "tool_calls": {"type": "integer", "minimum": 0},
                "classify": {"type": "boolean"},
                "budget": {"type": "string"},
                "tools": {"type": "array", "items": {"type": "string"}},
            },
            "allOf": [
                {"if": {"properties": {"action": {"const": "template"}}},
                 "then": {"required": ["template"]}},
                {"if": {"properties": {"action": {"const": "tool"}}},
                 "then": {"required": ["tool", "template"]}},
                {"if": {"properties": {"action": {"const": "agent"}}},
                 "then": {"required": ["lane", "tier", "budget", "tools"]}},
            ],
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(RULES_SCHEMA)


def _lines(node: yaml.Node, path: tuple[Any, ...], into: dict[tuple[Any, ...], int]) -> None:
    """Map every JSON path in the document to its (1-based) line."""
    into[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _lines(value, (*path, key.value), into)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), into)


def load_rules(path: Path) -> dict[str, Any]:
    """The rules document, valid against the schema and consistent; else a ConfigurationError."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        document = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigurationError(f"cannot read rules file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigurationError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is None:
        raise ConfigurationError(f"{path}:1: the rules file is empty")
    lines: dict[tuple[Any, ...], int] = {}
    _lines(node, (), lines)

    def at(where: tuple[Any, ...]) -> str:
        while where and where not in lines:
            where = where[:-1]
        return f"{path}:{lines.get(where, 1)}"

    problems = sorted(_VALIDATOR.iter_errors(document), key=lambda e: lines.get(tuple(e.path), 0))
    if problems:
        raise ConfigurationError("\n".join(
            f"{at(tuple(e.path))}: {'/'.join(map(str, e.path)) or '(document)'}: {e.message}" for e in problems))
    names: dict[str, int] = {}
    for index, rule in enumerate(document["rules"]):
        if rule["name"] in names:
            raise ConfigurationError(f"{at(('rules', index, 'name'))}: rule name {rule['name']!r} is used twice "
                                     f"(first at rule {names[rule['name']]})")
        names[rule["name"]] = index
    result: dict[str, Any] = document
    return result
