"""OpenAI's Batch API through the official SDK: ``files.create`` (purpose ``batch``),
``batches.create`` (``/v1/chat/completions``, window 24 h, the job key in ``metadata``),
``batches.retrieve`` and ``files.content`` of the output and error files, whose lines are
matched by ``custom_id`` (they come in any order). Any OpenAI-compatible server that
implements these endpoints works the same way.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from pipeline.llm.batch import BatchLine, BatchState
from pipeline.llm.openai_provider import OpenAIProvider, chat_body
from pipeline.llm.types import LLMResponse, ProviderUnavailable, RequestedToolCall

JOB_METADATA = "ticketflow_job"


def reply_from_completion(body: dict[str, Any], provider: str) -> LLMResponse:
    """A chat.completion object (an output line's ``response.body``) as a reply."""
    message = (body.get("choices") or [{}])[0].get("message") or {}
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    calls = tuple(RequestedToolCall(c.get("id", ""), (c.get("function") or {}).get("name", ""),
                                    (c.get("function") or {}).get("arguments", "") or "")
                  for c in message.get("tool_calls") or [])
    return LLMResponse(model=body.get("model", ""), provider=provider, text=message.get("content") or "",
                       tool_calls=calls, tokens_in=int(usage.get("prompt_tokens", 0) or 0),
                       tokens_out=int(usage.get("completion_tokens", 0) or 0),
                       tokens_cached=int(details.get("cached_tokens", 0) or 0))


class OpenAIBatches:
    def __init__(self, provider: OpenAIProvider) -> None:
        self.name = provider.name
        self.client = provider.client

    async def submit_batch(self, lines: list[BatchLine], job_key: str) -> str:
        data = "".join(json.dumps({"custom_id": line.custom_id, "method": "POST", "url": "/v1/chat/completions",
                                   "body": chat_body(line.request)}) + "\n" for line in lines).encode()
        try:
            uploaded = await self.client.files.create(file=(f"{job_key}.jsonl", data), purpose="batch")
            batch = await self.client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                     completion_window="24h", metadata={JOB_METADATA: job_key})
        except openai.OpenAIError as exc:
            raise ProviderUnavailable(f"{self.name}: batch job not created: {exc}") from exc
        return str(batch.id)

    async def find_batch(self, job_key: str) -> str | None:
        try:
            async for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}).get(JOB_METADATA) == job_key:
                    return str(batch.id)
        except openai.OpenAIError as exc:
            raise ProviderUnavailable(f"{self.name}: cannot list batch jobs: {exc}") from exc
        return None

    async def batch_state(self, batch_id: str) -> BatchState:
        try:
            batch = await self.client.batches.retrieve(batch_id)
            state = BatchState(batch_id, batch.status)
            if not state.terminal:
                return state
            if batch.output_file_id:
                for line in await self._lines(batch.output_file_id):
                    response = line.get("response") or {}
                    if response.get("status_code") == 200 and response.get("body"):
                        state.results[line["custom_id"]] = reply_from_completion(response["body"], self.name)
                    else:
                        state.errors[line["custom_id"]] = f"status {response.get('status_code')}"
            if batch.error_file_id:
                for line in await self._lines(batch.error_file_id):
                    error = line.get("error") or (line.get("response") or {}).get("body", {}).get("error") or {}
                    state.errors[line["custom_id"]] = str(error.get("message") or error or "failed")
        except openai.OpenAIError as exc:
            raise ProviderUnavailable(f"{self.name}: batch {batch_id} unreadable: {exc}") from exc
        return state

    async def _lines(self, file_id: str) -> list[dict[str, Any]]:
        content = await self.client.files.content(file_id)
        return [json.loads(text) for text in content.text.splitlines() if text.strip()]
