"""A local HTTP server speaking OpenAI's chat-completions protocol (streaming SSE, usage with
cached tokens, tool calls), with faults chosen by the model name:

- ``ok-*``: streams a JSON answer in several chunks, then the usage chunk;
- ``tools-*``: streams a tool call whose arguments arrive in pieces;
- ``ratelimit-*``: 429 with ``Retry-After: 2``; ``down-*``: 503; ``slow-*``: answers after 5 s;
- ``malformed-*``: a tool call whose arguments are not JSON;
- ``flaky-*``: 503 while ``server.failing`` is set, else like ``ok``.

Every request is counted per model in ``server.requests``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from typing import Any

from aiohttp import web


class FaultServer:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}  # the last request body per model
        self.failing = True
        self.loop = asyncio.new_event_loop()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FaultServer:
        ready = threading.Event()
        self._ready = ready
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        self.loop.run_until_complete(self._runner.setup())
        self.loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self.loop.run_forever()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model: str = body["model"]
        self.requests[model] += 1
        self.bodies[model] = body
        kind = model.split("-")[0]
        if kind == "ratelimit":
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": "2"})
        if kind == "down" or (kind == "flaky" and self.failing):
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=503)
        if kind == "slow":
            await asyncio.sleep(5)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": f"{model}-2026-01-01"}
        if kind in ("tools", "malformed"):
            arguments = '{"customer_id": "C-00001"}' if kind == "tools" else '{"customer_id": "C-0'
            pieces = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]]
            for i, piece in enumerate(pieces):
                call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                if i == 0:
                    call.update({"id": "call_abc", "type": "function"})
                    call["function"]["name"] = "card_status"
                await send({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
        else:
            text = json.dumps({"resolution_key": "exchange_rate", "answer": "We use the interbank rate.",
                               "confidence": 0.9})
            for i in range(0, len(text), 20):
                await send({**base, "choices": [{"index": 0, "delta": {"content": text[i:i + 20]},
                                                 "finish_reason": None}]})
                await asyncio.sleep(0.005)
        await send({**base, "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": 40,
                                                      "total_tokens": 1240,
                                                      "prompt_tokens_details": {"cached_tokens": 1024}}})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
