"""The LLM provider port: requests, responses and the failures a provider can have.

Every provider (the OpenAI-compatible one, the simulated one) speaks these types, so the
agent never sees a provider's SDK. Failures are typed by what the caller should do:
``RateLimited`` (wait at least ``retry_after_s``), ``ProviderUnavailable`` (5xx, connection:
retry, count against the breaker), ``ProviderTimeout`` (likewise), ``MalformedOutput``
(the call was served and billed, but its tool call does not parse: the step decides).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pipeline.errors import TicketflowError
from pipeline.events import Message

ChatMessage = Message  # one message type for agent transcripts and provider requests


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LLMRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolDefinition, ...] = ()
    max_tokens: int = 400
    temperature: float = 0.0
    request_id: str = ""  # the step id and tier: simulated faults and answers are keyed by it
    response_schema: dict[str, Any] | None = None  # a JSON schema the reply must follow (structured output)
    tool_choice: str | None = None  # the name of a tool the reply must call (None: the model decides)


@dataclass(frozen=True, slots=True)
class RequestedToolCall:
    call_id: str
    name: str
    arguments: str  # JSON text as the model wrote it


@dataclass(frozen=True, slots=True)
class LLMResponse:
    model: str
    provider: str
    text: str
    tool_calls: tuple[RequestedToolCall, ...] = ()
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    ttft_ms: float = 0.0
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderError(TicketflowError):
    retryable = True
    breaker_failure = True


class RateLimited(ProviderError):
    breaker_failure = False  # the provider works; we are asking too often

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    pass


class ProviderTimeout(ProviderError):
    pass


class ProviderRejected(ProviderError):
    """The provider refused the request itself (a 4xx other than 408, 409 and 429: a bad
    request, an unknown model, a missing permission): the same request again cannot succeed,
    and the provider is not unhealthy."""

    retryable = False
    breaker_failure = False


class MalformedOutput(ProviderError):
    """Served and billed, but unusable (a tool call whose arguments are not JSON)."""

    breaker_failure = False

    def __init__(self, message: str, response: LLMResponse) -> None:
        super().__init__(message)
        self.response = response


class LLMProvider(Protocol):
    """A model behind an API. A provider that keeps the replies it served (OpenAI's stored
    completions, the simulated provider) also has ``async recover(request_id) -> LLMResponse
    | None``: the reply it served to a request of that id, if any. The runner asks it before
    it calls again for an attempt that a crashed worker left in flight, so that a reply paid
    for but never received is not bought twice."""

    name: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...


def response_to_json(response: LLMResponse) -> str:
    return json.dumps(asdict(response))


def response_from_json(raw: str | bytes) -> LLMResponse:
    data = json.loads(raw)
    data["tool_calls"] = tuple(RequestedToolCall(**c) for c in data["tool_calls"])
    return LLMResponse(**data)
