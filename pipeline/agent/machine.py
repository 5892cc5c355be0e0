"""What an LLM reply means for the workflow, decided by code: a final answer, a tool call, or
a rejection; and the cascade's check of a cheap tier's final answer.

Pure functions: the agent processor sequences the steps, this module only judges replies.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.llm.types import LLMResponse, RequestedToolCall

MAX_ANSWER_CHARS = 1500


@dataclass(frozen=True)
class Final:
    resolution_key: str
    answer: str
    confidence: float


@dataclass(frozen=True)
class UseTool:
    call: RequestedToolCall


@dataclass(frozen=True)
class Reject:
    reason: str  # invalid_output, disallowed_tool, ...


Action = Final | UseTool | Reject


def interpret(response: LLMResponse, allowed_tools: Collection[str], known_keys: Collection[str]) -> Action:
    """A reply as the workflow sees it; anything it cannot use is a :class:`Reject`."""
    if response.tool_calls:
        call = response.tool_calls[0]
        if call.name not in allowed_tools:
            return Reject(f"disallowed_tool: {call.name}")
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError:
            return Reject(f"malformed_tool_call: {call.name}")
        if not isinstance(arguments, dict):
            return Reject(f"malformed_tool_call: {call.name}")
        return UseTool(call)
    try:
        reply = json.loads(response.text)
        key, answer, confidence = reply["resolution_key"], reply["answer"], float(reply["confidence"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return Reject("invalid_output: not the JSON reply the prompt asks for")
    if not isinstance(key, str) or not isinstance(answer, str) or not answer.strip():
        return Reject("invalid_output: empty or mistyped fields")
    if key not in known_keys:
        return Reject(f"unknown_resolution_key: {key}")
    if len(answer) > MAX_ANSWER_CHARS:
        return Reject("invalid_output: answer too long")
    return Final(key, answer.strip(), max(0.0, min(1.0, confidence)))


@dataclass(frozen=True)
class CascadePolicy:
    """When the cheap tier's answer stands (FrugalGPT's scorer, made of deterministic rules)."""

    min_confidence: float = 0.75
    strong_only_keys: frozenset[str] = frozenset({"lost_or_stolen_card", "compromised_card",
                                                  "card_payment_not_recognised", "cash_withdrawal_not_recognised",
                                                  "request_refund", "terminate_account"})

    def accepts(self, action: Action) -> tuple[bool, str]:
        if not isinstance(action, Final):
            return (isinstance(action, UseTool), "" if isinstance(action, UseTool) else action.reason)
        if action.confidence < self.min_confidence:
            return False, f"low_confidence: {action.confidence:.2f}"
        if action.resolution_key in self.strong_only_keys:
            return False, f"policy: {action.resolution_key} needs the strong tier"
        return True, ""
