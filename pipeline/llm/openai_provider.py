"""Any OpenAI-compatible endpoint (OpenAI, Azure, vLLM, Ollama, LiteLLM) through the official
``openai`` SDK, streaming: time to first token is measured at the first content or tool-call
delta, usage (with cached input tokens) comes from the stream's final chunk
(``stream_options={"include_usage": True}``).

With ``store_completions`` each completion is kept by the provider under the request's id
(``store=true`` and ``metadata``), and :meth:`OpenAIProvider.recover` finds it again by that
id (``GET /v1/chat/completions?metadata[ticketflow_request_id]=...``): the runner asks before
it repeats an attempt that a crashed worker left in flight.

The SDK's own retries are off (``max_retries=0``): retries, backoff and Retry-After belong
to the agent's runner, which also counts them against the breaker and the budget.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from pipeline.llm.tokens import count_tokens
from pipeline.llm.types import (
    ChatMessage,
    LLMRequest,
    LLMResponse,
    MalformedOutput,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestedToolCall,
)


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "assistant" and message.tool_name:
        return {"role": "assistant", "content": message.content or None, "tool_calls": [{
            "id": message.tool_call_id, "type": "function",
            "function": {"name": message.tool_name, "arguments": message.tool_arguments or "{}"}}]}
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    return {"role": message.role, "content": message.content}


def chat_body(request: LLMRequest, structured_output: str = "json_schema") -> dict[str, Any]:
    """The chat-completions body of a request (streamed by :meth:`OpenAIProvider.complete`,
    or a line of a Batch API job). ``structured_output``: how a reply schema is asked for,
    OpenAI's ``json_schema`` or ``json_object`` with a ``schema`` (llama.cpp's server, which
    constrains the reply by a grammar and refuses ``json_schema``)."""
    body: dict[str, Any] = {"model": request.model, "messages": [_message(m) for m in request.messages],
                            "max_tokens": request.max_tokens, "temperature": request.temperature}
    if request.response_schema is not None and structured_output == "json_object":
        body["response_format"] = {"type": "json_object", "schema": request.response_schema}
    elif request.response_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "reply", "schema": request.response_schema, "strict": True}}
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.parameters}} for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
    return body


def estimated_tokens(request: LLMRequest, reply: str, calls: tuple[RequestedToolCall, ...]) -> tuple[int, int]:
    """Input and output tokens of a call whose server reported none, by the bundled tokenizer
    (an estimate: the server's own tokenizer may count a few tens of percent differently),
    with the chat format's few tokens per message and the tool schemas the model was shown."""
    tokens_in = sum(count_tokens(m.content or "") + 4 for m in request.messages) + 3
    tokens_in += sum(count_tokens(json.dumps({"name": t.name, "description": t.description,
                                              "parameters": t.parameters})) for t in request.tools)
    tokens_out = count_tokens(reply) + sum(count_tokens(c.name) + count_tokens(c.arguments) + 4 for c in calls)
    return tokens_in, max(1, tokens_out)


REQUEST_ID = "ticketflow_request_id"  # the metadata key a stored completion is found by


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIProvider:
    def __init__(self, base_url: str | None, api_key: str | None, timeout_s: float = 30.0,
                 name: str = "openai", store_completions: bool = False, structured_output: str = "json_schema") -> None:
        self.name = name
        self.store_completions = store_completions
        self.structured_output = structured_output
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s,
                                         max_retries=0)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: Any = None
        finished = False
        model = request.model
        kwargs = {**chat_body(request, self.structured_output), "stream": True,
                  "stream_options": {"include_usage": True}}
        if self.store_completions and request.request_id:
            kwargs.update(store=True, metadata={REQUEST_ID: request.request_id})
        try:
            stream = await self.client.chat.completions.create(**kwargs)
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    finished = finished or choice.finish_reason is not None
                    delta = choice.delta
                    if (delta.content or delta.tool_calls) and ttft is None:
                        ttft = (time.perf_counter() - started) * 1000
                    if delta.content:
                        text.append(delta.content)
                    for part in delta.tool_calls or []:
                        slot = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        slot["id"] = part.id or slot["id"]
                        if part.function is not None:
                            slot["name"] = part.function.name or slot["name"]
                            slot["arguments"] += part.function.arguments or ""
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        except httpx.TransportError as exc:  # the connection dropped mid-stream (the SDK does not wrap it)
            raise ProviderUnavailable(f"{self.name}: the stream broke off: {exc}") from exc
        if not finished:  # llama.cpp's server ends a stream this way when a newer request interrupts it
            raise ProviderUnavailable(f"{self.name}: the stream ended without a finish reason (cut off by the "
                                      f"server after {len(''.join(text))} characters)")
        latency = (time.perf_counter() - started) * 1000
        cached = 0
        details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
        if details is not None:
            cached = getattr(details, "cached_tokens", 0) or 0
        tool_calls = tuple(RequestedToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items()))
        reply = "".join(text)
        extra: dict[str, Any] = {}
        if usage is None:  # a server that sends no usage chunk (llama.cpp's, some proxies): counted here
            tokens_in, tokens_out = estimated_tokens(request, reply, tool_calls)
            extra["usage"] = "estimated"
        else:
            tokens_in = getattr(usage, "prompt_tokens", 0) or 0
            tokens_out = getattr(usage, "completion_tokens", 0) or 0
        response = LLMResponse(
            model=model, provider=self.name, text=reply, tool_calls=tool_calls, tokens_in=tokens_in,
            tokens_out=tokens_out, tokens_cached=cached, ttft_ms=round(ttft if ttft is not None else latency, 2),
            latency_ms=round(latency, 2), extra=extra)
        for call in response.tool_calls:
            try:
                json.loads(call.arguments or "{}")
            except json.JSONDecodeError as exc:
                raise MalformedOutput(f"tool call {call.name} has arguments that are not JSON: {exc}",
                                      response) from exc
        return response

    async def recover(self, request_id: str) -> LLMResponse | None:
        """The stored completion made for ``request_id`` (None: none, or storing is off)."""
        if not self.store_completions:
            return None
        try:
            page = await self.client.chat.completions.list(metadata={REQUEST_ID: request_id}, limit=1)
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        if not page.data:
            return None
        completion = page.data[0]
        message = completion.choices[0].message if completion.choices else None
        usage = completion.usage
        details = getattr(usage, "prompt_tokens_details", None)
        calls = tuple(RequestedToolCall(c.id, c.function.name, c.function.arguments)
                      for c in (message.tool_calls or []) if isinstance(c, ChatCompletionMessageFunctionToolCall)) \
            if message is not None else ()
        return LLMResponse(model=completion.model, provider=self.name, text=(message.content or "") if message else "",
                           tool_calls=calls, tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
                           tokens_out=getattr(usage, "completion_tokens", 0) or 0,
                           tokens_cached=(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0,
                           extra={"recovered": completion.id})

    def _error(self, exc: openai.OpenAIError) -> Exception:
        if isinstance(exc, openai.RateLimitError):
            return RateLimited(f"429 from {self.name}: {exc.message}", _retry_after(exc))
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(f"{self.name} did not answer in time")
        if isinstance(exc, openai.APIConnectionError):
            return ProviderUnavailable(f"cannot reach {self.name}: {exc}")
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code >= 500:
                return ProviderUnavailable(f"{exc.status_code} from {self.name}: {exc.message}")
            if exc.status_code in (408, 409):  # a timeout or a conflict on the provider's side: again later
                return ProviderUnavailable(f"{exc.status_code} from {self.name}: {exc.message}")
            return ProviderRejected(f"{exc.status_code} from {self.name}: the request was refused: {exc.message}")
        return ProviderUnavailable(f"{self.name}: {exc}")
