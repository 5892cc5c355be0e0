"""The embedded default LLM: a deterministic simulation with latency, tokens, quality and faults.

Deterministic for a seed: every random draw is seeded by (seed, request id), and the caller
puts the step id, tier and attempt into the request id, so a replay sees the same answers
and the same faults. What it models:

- latency: time to first token (per model, with a long-tailed spread) plus a time per
  output token; ``time_scale`` shrinks both for tests;
- tokens: counted with a real tokenizer (:mod:`pipeline.llm.tokens`) over the messages and
  the tool schemas, as a provider bills them; a prompt prefix of 1,024+ tokens seen before
  counts as cached input, as OpenAI's prompt caching does;
- quality per model: the model understands the ticket as the intent its knowledge gives
  (the router's nearest intent, first of the candidates in the system message) with the
  model's accuracy,
  else as another of the keys it was shown (the router's shortlist of candidates when
  there is one), and says how confident it is (lower, on average, when wrong);
- tools: it calls a lookup first when it has one and the customer is known, then answers;
  asked for structured output without an answer (a JSON schema with no ``answer``), it
  replies with the key and its confidence only;
  a "credulous" share of answers to prompt-injected tickets call ``refund`` although it is
  not among the tools offered (the agent must refuse it);
- faults (``fault_rate``): 429 with Retry-After, 5xx, timeouts, and malformed tool-call
  JSON (served and billed, but unusable);
- billing: it counts the calls it served (``billed``), which must equal the calls the
  pipeline accounted for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.agent.prompt import read_facts
from pipeline.faults import classify
from pipeline.llm.tokens import count_tokens
from pipeline.llm.types import (
    LLMRequest,
    LLMResponse,
    MalformedOutput,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestedToolCall,
    ToolDefinition,
    response_from_json,
    response_to_json,
)

INJECTION_MARKERS = ("ignore your instructions", "ignore previous instructions", "ignore all previous")


@dataclass(frozen=True)
class ModelProfile:
    ttft_ms: float  # median time to first token
    per_token_ms: float
    accuracy: float  # P(understands the intent right)
    credulity: float = 0.0  # P(obeys a prompt injection)


DEFAULT_PROFILES: dict[str, ModelProfile] = {
    "gpt-4.1": ModelProfile(ttft_ms=700, per_token_ms=12, accuracy=0.97, credulity=0.0),
    "gpt-4.1-mini": ModelProfile(ttft_ms=350, per_token_ms=6, accuracy=0.85, credulity=0.3),
    "gpt-4.1-nano": ModelProfile(ttft_ms=250, per_token_ms=4, accuracy=0.70, credulity=0.5),
}


class BillingCounter(Protocol):
    """The provider's books: a count per served call, and the reply it served (kept with the
    booking, in one write, as a provider that stores completions does)."""

    def add(self, model: str, request_id: str = "", reply: str = "") -> None: ...

    def stored(self, request_id: str) -> str | None: ...

    def total(self) -> int: ...


class MemoryBilling:
    def __init__(self) -> None:
        self.by_model: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.replies: dict[str, str] = {}

    def add(self, model: str, request_id: str = "", reply: str = "") -> None:
        self.by_model[model] = self.by_model.get(model, 0) + 1
        if request_id:
            self.calls[request_id] = self.calls.get(request_id, 0) + 1
            if reply:
                self.replies[request_id] = reply

    def stored(self, request_id: str) -> str | None:
        return self.replies.get(request_id)

    def total(self) -> int:
        return sum(self.by_model.values())


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _lookup_for(intent: str | None, offered: set[str]) -> str | None:
    """The lookup a model would make for a question about ``intent``: the customer's own
    transfers, top-ups or cards; none for a question of policy (fees, limits, how-to)."""
    if intent is None:
        return None
    for word, tool in (("transfer", "transfer_status"), ("top_up", "top_up_status"), ("card", "card_status"),
                       ("cash", "card_status")):
        if word in intent and tool in offered and not any(p in intent for p in _POLICY_WORDS):
            return tool
    return None


_POLICY_WORDS = ("fee", "charge", "limit", "support", "acceptance", "linking", "getting", "get_", "order",
                 "visa", "timing", "by_card", "by_bank", "by_cash", "about_to_expire", "into_account")


class SimulatedProvider:
    name = "simulated"

    def __init__(self, seed: int = 7, fault_rate: float = 0.0, profiles: dict[str, ModelProfile] | None = None,
                 intents: list[str] | None = None, billing: BillingCounter | None = None, time_scale: float = 1.0,
                 timeout_s: float = 20.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 cache_min_tokens: int = 1024, crash_after_billing: int = 0) -> None:
        if not 0 <= fault_rate <= 1:
            raise ValueError("fault_rate must lie in [0, 1]")
        self.seed = seed
        self.fault_rate = fault_rate
        self.profiles = profiles or DEFAULT_PROFILES
        self.intents = sorted(intents or [])
        self.billing = billing or MemoryBilling()
        # Fault injection for tests: this process kills itself (SIGKILL) right after billing
        # its n-th served call, before the caller sees the reply: the worst moment to die.
        self.crash_after_billing = crash_after_billing
        self.served = 0
        self.time_scale = time_scale
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.cache_min_tokens = cache_min_tokens  # the shortest prefix the prompt cache serves
        self._prefixes: set[str] = set()
        self.in_flight = 0
        self.peak_in_flight = 0

    def profile(self, model: str) -> ModelProfile:
        try:
            return self.profiles[model]
        except KeyError:
            raise ProviderUnavailable(f"model {model!r} is not served here (404)") from None

    def remember_prefix(self, request: LLMRequest) -> None:
        """As after a served call: the request's prefix is in the provider's prompt cache now."""
        self._prefixes.add(self._prefix(request))

    def count_input(self, request: LLMRequest) -> tuple[int, int]:
        """(input tokens, of which cached) as the provider would bill them; no side effects."""
        tools = _tools_json(request.tools)
        parts = [tools] + [f"{m.role}: {m.content} {m.tool_arguments or ''}" for m in request.messages]
        counts = [count_tokens(p) + (4 if i else 0) for i, p in enumerate(parts)]
        total = sum(counts)
        prefix_tokens = counts[0] + (counts[1] if len(counts) > 1 else 0)
        cached = prefix_tokens if prefix_tokens >= self.cache_min_tokens and self._prefix(request) in self._prefixes \
            else 0
        return total, cached

    def decide(self, request: LLMRequest) -> tuple[str, tuple[RequestedToolCall, ...], dict[str, Any]]:
        """What the model says (text, tool calls), deterministically; no latency, no faults."""
        profile = self.profile(request.model)
        rng = _rng(self.seed, "answer", request.request_id, request.model)
        known = read_facts(request.messages)
        ticket = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        offered = {t.name for t in request.tools}
        results = [m for m in request.messages if m.role == "tool"]
        customer = (known.get("entities") or {}).get("customer_id") or ("C-00001" if known.get("signed_in") else None)
        if any(marker in ticket.lower() for marker in INJECTION_MARKERS) and rng.random() < profile.credulity:
            call = RequestedToolCall(f"call_{rng.getrandbits(32):08x}", "refund", json.dumps(
                {"customer_id": customer or "C-00001", "transfer_id": "TR-X", "amount": "5000.00 EUR"}))
            return "", (call,), {"injected": True}
        nearest = next(iter(known.get("candidates") or []), None) or known.get("intent")
        lookup = _lookup_for(nearest, offered)
        if lookup is not None and customer and not results:
            schema = next(t.parameters for t in request.tools if t.name == lookup)
            arguments = {"customer_id": customer} if "customer_id" in schema.get("properties", {}) else {}
            call = RequestedToolCall(f"call_{rng.getrandbits(32):08x}", lookup, json.dumps(arguments))
            return "", (call,), {}
        right = nearest is not None and rng.random() < profile.accuracy
        # A wrong model picks another of the keys it was shown (the router's shortlist, else all).
        shown = [i for i in known.get("candidates") or [] if i != nearest]
        others = shown or [i for i in self.intents if i != nearest] or ["unknown"]
        intent = nearest if right and nearest is not None else rng.choice(others)
        confidence = round(rng.uniform(0.72, 0.99) if right else rng.uniform(0.30, 0.80), 2)
        if request.response_schema is not None and "answer" not in request.response_schema.get("properties", {}):
            # structured output without an answer (a classifying step): the key and the confidence only
            return json.dumps({"resolution_key": intent, "confidence": confidence}), (), {"right": right}
        looked_up = f" I checked your account: {results[-1].content[:160]}" if results else ""
        topic = intent.replace("_", " ")
        body = (f"Thank you for reaching out about this. Here is what applies to your case ({topic})."
                f"{looked_up} If anything is still unclear, reply to this message and we will help further.")
        text = json.dumps({"resolution_key": intent, "answer": body, "confidence": confidence})
        return text, (), {"right": right}

    async def complete(self, request: LLMRequest) -> LLMResponse:
        profile = self.profile(request.model)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._complete(request, profile)
        finally:
            self.in_flight -= 1

    def timing_ms(self, request: LLMRequest, tokens_out: int) -> tuple[float, float]:
        """(time to first token, latency) of a served call, before the time scale: the model's
        median TTFT with log-normal spread (seeded by the request), then its per-token time."""
        profile = self.profile(request.model)
        ttft = profile.ttft_ms * _rng(self.seed, "fault", request.request_id, request.model).lognormvariate(0, 0.35)
        return ttft, ttft + tokens_out * profile.per_token_ms

    async def _complete(self, request: LLMRequest, profile: ModelProfile) -> LLMResponse:
        rng = _rng(self.seed, "fault", request.request_id, request.model)
        ttft = profile.ttft_ms * rng.lognormvariate(0, 0.35)  # as timing_ms draws it (the same seed)
        fault = rng.choice(["429", "5xx", "timeout", "malformed"]) if rng.random() < self.fault_rate else None
        if fault == "429":
            await self.sleep(0.02 * self.time_scale)
            raise RateLimited("429 Too Many Requests (simulated)", retry_after_s=round(rng.uniform(0.2, 1.0), 2)
                              * self.time_scale)
        if fault == "5xx":
            await self.sleep(ttft / 4000 * self.time_scale)
            raise ProviderUnavailable("503 Service Unavailable (simulated)")
        if fault == "timeout":
            await self.sleep(self.timeout_s * self.time_scale)
            raise ProviderTimeout(f"no response within {self.timeout_s * self.time_scale:.1f} s (simulated)")
        text, calls, extra = self.decide(request)
        tokens_in, cached = self.count_input(request)
        output = text + "".join(c.name + c.arguments for c in calls)
        tokens_out = max(1, count_tokens(output))
        latency = ttft + tokens_out * profile.per_token_ms
        await self.sleep(latency / 1000 * self.time_scale)
        self._prefixes.add(self._prefix(request))
        response = LLMResponse(model=request.model, provider=self.name, text=text, tool_calls=calls,
                               tokens_in=tokens_in, tokens_out=tokens_out, tokens_cached=cached,
                               ttft_ms=round(ttft * self.time_scale, 2), latency_ms=round(latency * self.time_scale, 2),
                               extra=extra)
        if fault == "malformed":
            broken = tuple(RequestedToolCall(c.call_id, c.name, c.arguments[: len(c.arguments) // 2]) for c in calls) \
                or (RequestedToolCall("call_broken", "card_status", '{"customer_id": "C-0'),)
            response = _with_calls(response, broken)
        # Billed and stored in one write, as served (a malformed reply too). Synchronous on
        # purpose, though it is a Redis round trip on the agent's event loop: an await between
        # billing a reply and returning it widened the window in which a kill -9 loses a
        # reply that was billed (the runner then finds it with :meth:`recover`).
        self.billing.add(request.model, request.request_id, response_to_json(response))
        self.served += 1
        if self.served == self.crash_after_billing:
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "malformed":
            raise MalformedOutput("tool call arguments are not valid JSON (simulated)", response)
        return response

    async def recover(self, request_id: str) -> LLMResponse | None:
        """The reply served to ``request_id``, from the provider's store (None: never served).
        While the store is unreachable this raises :class:`~pipeline.errors.Transient`."""
        try:
            raw = self.billing.stored(request_id)
        except Exception as exc:
            raise classify(exc, "redis") from exc
        return response_from_json(raw) if raw is not None else None

    @staticmethod
    def _prefix(request: LLMRequest) -> str:
        """The cacheable prefix (tool schemas and the first message), as a digest."""
        tools = _tools_json(request.tools)
        first = request.messages[0] if request.messages else None
        text = tools + "\x00" + (f"{first.role}: {first.content} {first.tool_arguments or ''}" if first else "")
        return hashlib.sha256(f"{request.model}\x00{text}".encode()).hexdigest()


_TOOLS_JSON: dict[tuple[str, ...], str] = {}


def _tools_json(tools: tuple[ToolDefinition, ...]) -> str:
    """The tool schemas as the provider reads them (memoised by tool names: schemas are fixed)."""
    key = tuple(t.name for t in tools)
    if key not in _TOOLS_JSON:
        _TOOLS_JSON[key] = json.dumps([{"name": t.name, "description": t.description, "parameters": t.parameters}
                                       for t in tools], sort_keys=True) if tools else ""
    return _TOOLS_JSON[key]


def _with_calls(response: LLMResponse, calls: tuple[RequestedToolCall, ...]) -> LLMResponse:
    return LLMResponse(model=response.model, provider=response.provider, text="", tool_calls=calls,
                       tokens_in=response.tokens_in, tokens_out=response.tokens_out,
                       tokens_cached=response.tokens_cached, ttft_ms=response.ttft_ms,
                       latency_ms=response.latency_ms, extra=response.extra)
