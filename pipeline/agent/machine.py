"""What an LLM reply means for the workflow, decided by code: a final answer, a tool call, or
a rejection; and the cascade's check of a cheap tier's final answer.

Pure functions: the agent processor sequences the steps, this module only judges replies.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

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


def interpret(response: LLMResponse, allowed_tools: Collection[str], known_keys: Collection[str],
              classify: bool = False) -> Action:
    """A reply as the workflow sees it; anything it cannot use is a :class:`Reject`. A
    classifying step's reply has no answer (``Final.answer`` is empty): the rules give it."""
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
        key, confidence = reply["resolution_key"], float(reply["confidence"])
        answer = "" if classify else reply["answer"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return Reject("invalid_output: not the JSON reply the prompt asks for")
    if not isinstance(key, str) or not isinstance(answer, str) or not (classify or answer.strip()):
        return Reject("invalid_output: empty or mistyped fields")
    if key not in known_keys:
        return Reject(f"unknown_resolution_key: {key}")
    if len(answer) > MAX_ANSWER_CHARS:
        return Reject("invalid_output: answer too long")
    return Final(key, answer.strip(), max(0.0, min(1.0, confidence)))


# Answers a wrong key costs most on: a lower tier answers them only when very sure.
SENSITIVE_KEYS = frozenset({"lost_or_stolen_card", "compromised_card", "card_payment_not_recognised",
                            "cash_withdrawal_not_recognised", "request_refund", "terminate_account"})


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    why: str = ""
    top_only: bool = False  # only the top tier may give this reply: skip the tiers between


@dataclass(frozen=True)
class CascadePolicy:
    """When a lower tier's reply stands (FrugalGPT's scorer, made of deterministic rules):
    a tool call of a read-only tool; a final answer with a known key, at or above the tier's
    confidence threshold (calibrated on labelled tickets: ``bench/cascade_calibration.py``),
    and at or above the stricter ``sensitive_confidence`` when the ticket was routed as, or
    is answered with, one of the sensitive keys (lost or stolen cards, fraud, refunds,
    closing an account). A side-effecting tool call is the top tier's to make."""

    min_confidence: Mapping[str, float] = field(default_factory=lambda: {"cheap": 0.75})
    sensitive_keys: frozenset[str] = SENSITIVE_KEYS
    sensitive_confidence: float = 0.77  # a lower tier's answer about a sensitive key stands from here
    acting_tools: frozenset[str] = frozenset({"freeze_card", "refund"})
    default_confidence: float = 0.75  # a tier without a threshold of its own

    def threshold(self, tier: str) -> float:
        return self.min_confidence.get(tier, self.default_confidence)

    def judge(self, action: Action, tier: str, routed_intent: str | None = None) -> Verdict:
        """``routed_intent``: the intent the router recognised (None when it abstained)."""
        if isinstance(action, Reject):
            return Verdict(False, action.reason)
        if isinstance(action, UseTool):
            if action.call.name in self.acting_tools:
                return Verdict(False, f"policy: {action.call.name} changes data; the top tier decides", True)
            return Verdict(True)
        for key in (action.resolution_key, routed_intent):
            if key in self.sensitive_keys and action.confidence < self.sensitive_confidence:
                return Verdict(False, f"policy: {key} below the top tier needs confidence "
                               f"{self.sensitive_confidence:.2f}, not {action.confidence:.2f}")
        if action.confidence < self.threshold(tier):
            return Verdict(False, f"low_confidence: {action.confidence:.2f} < {self.threshold(tier):.2f}")
        return Verdict(True)
