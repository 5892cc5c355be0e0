"""The typed tool registry: what each tool takes, whether its result may be cached, and
whether it changes anything.

Arguments are validated against the tool's JSON schema before any call; a
side-effecting tool (a refund, freezing a card) is never cached and needs an idempotency
key. Validation errors name the argument and the rule it broke, so a rule author or the
agent's transcript shows exactly what was wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from pipeline.errors import TicketflowError


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who a call is for: the tenant whose data it reads, the key a side effect is recorded under."""

    tenant_id: str
    idempotency_key: str


ToolFunction = Callable[[ToolContext, Mapping[str, Any]], dict[str, Any]]


class ToolArgumentError(TicketflowError):
    """Arguments that fail the tool's schema; never retried, never sent to the tool."""


class UnknownTool(TicketflowError):
    pass


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments (an object)
    deterministic: bool = True  # same arguments and data version -> same result: cacheable
    side_effecting: bool = False  # changes state: never cached, needs an idempotency key
    data_source: str | None = None  # what an invalidation event names to drop cached results
    timeout_s: float = 2.0
    returns: tuple[str, ...] = ()  # the fields of its result object that templates may use
    validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.side_effecting and self.deterministic:
            raise ValueError(f"tool {self.name}: a side-effecting tool cannot be cached (deterministic=False)")
        jsonschema.Draft202012Validator.check_schema(self.parameters)
        object.__setattr__(self, "validator", jsonschema.Draft202012Validator(self.parameters))


def canonical(arguments: Mapping[str, Any]) -> str:
    """The arguments as canonical JSON (sorted keys, no spaces): the cache key's basis."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(arguments).encode()).hexdigest()[:32]


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, tuple[ToolSpec, ToolFunction]] = {}

    def register(self, spec: ToolSpec, function: ToolFunction) -> None:
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name} is registered twice")
        self._tools[spec.name] = (spec, function)

    def spec(self, name: str) -> ToolSpec:
        try:
            return self._tools[name][0]
        except KeyError:
            raise UnknownTool(f"no tool named {name!r}; known: {', '.join(sorted(self._tools))}") from None

    def function(self, name: str) -> ToolFunction:
        self.spec(name)
        return self._tools[name][1]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def validate(self, name: str, arguments: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        """The arguments, checked; raises :class:`ToolArgumentError` with every problem."""
        spec = self.spec(name)
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"{name}: arguments must be a JSON object, got {type(arguments).__name__}")
        problems = sorted(spec.validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            described = "; ".join(f"{'/'.join(map(str, e.path)) or '(arguments)'}: {e.message}" for e in problems)
            raise ToolArgumentError(f"{name}: invalid arguments: {described}")
        if spec.side_effecting and not idempotency_key:
            raise ToolArgumentError(f"{name} changes state and needs an idempotency key")
        return dict(arguments)
