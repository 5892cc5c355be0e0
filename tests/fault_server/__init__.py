"""A local HTTP server speaking OpenAI's chat-completions protocol (streaming SSE, usage with
cached tokens, tool calls), with faults chosen by the model name:

- ``ok-*``: streams a JSON answer in several chunks, then the usage chunk; ``nousage-*``: the
  same without a usage chunk (as llama.cpp's server and some proxies do); ``cutoff-*``: without
  a finish reason (as llama.cpp's server ends a stream a newer request interrupted);
- ``tools-*``: streams a tool call whose arguments arrive in pieces;
- ``ratelimit-*``: 429 with ``Retry-After: 2``; ``down-*``: 503; ``slow-*``: answers after 5 s;
- ``malformed-*``: a tool call whose arguments are not JSON; ``refuse-*``: 400 (a request the
  server does not accept);
- ``flaky-*``: 503 while ``server.failing`` is set, else like ``ok``.

Every request is counted per model in ``server.requests``.

It also speaks OpenAI's Batch API (``/v1/files``, ``/v1/batches``: create, retrieve, list,
cancel), with its faults: a job completes ``batch_delay_s`` after it was created, its output
lines in reverse order (custom_id is the only link); a line whose model is ``failline-*``
goes to the error file; with ``batch_outcome = "expired"`` a job expires with only the first
half of its lines answered; a cancelled job keeps the lines answered before the cancel (the
first half). ``batch_creates`` counts jobs created per custom_id (a call submitted twice).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web


class FaultServer:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}  # the last request body per model
        self.failing = True
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_lines: dict[str, list[dict[str, Any]]] = {}
        self.batch_creates: Counter[str] = Counter()
        self.batch_delay_s = 1.0
        self.batch_outcome = "completed"  # or "expired"
        self.stored: list[dict[str, Any]] = []  # completions made with store=true, as listed back
        self.drop_after_serving = False  # serve a completion, then drop the connection (reply lost)
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
        app.router.add_get("/v1/chat/completions", self._list_completions)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel_batch)
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
        if kind == "refuse":  # as llama.cpp's server answers a response_format it does not know
            return web.json_response({"error": {"message": "Input should be 'text' or 'json_object'",
                                                "type": "invalid_request_error"}}, status=400)
        if kind == "down" or (kind == "flaky" and self.failing):
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=503)
        if kind == "slow":
            await asyncio.sleep(5)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        base = {"id": f"chatcmpl-{sum(self.requests.values())}", "object": "chat.completion.chunk", "created": 1,
                "model": f"{model}-2026-01-01"}
        usage = {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
                 "prompt_tokens_details": {"cached_tokens": 1024}}
        if body.get("store"):
            self._store(base, kind, body.get("metadata") or {}, usage)
            if self.drop_after_serving:  # served and stored (billed), but the client never sees the reply
                await response.write(b"data: {not json")
                request.transport.close() if request.transport else None
                return response
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
        if kind != "cutoff":  # cutoff-*: the stream ends without a finish reason (an interrupted stream)
            reason = "tool_calls" if kind in ("tools", "malformed") else "stop"
            await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        if kind != "nousage":
            await send({**base, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _store(self, base: dict[str, Any], kind: str, metadata: dict[str, str], usage: dict[str, Any]) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if kind in ("tools", "malformed"):
            message["tool_calls"] = [{"id": "call_abc", "type": "function", "function": {
                "name": "card_status", "arguments": '{"customer_id": "C-00001"}'}}]
        else:
            message["content"] = json.dumps({"resolution_key": "exchange_rate",
                                             "answer": "We use the interbank rate.", "confidence": 0.9})
        self.stored.append({**base, "object": "chat.completion", "metadata": metadata, "usage": usage,
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    async def _list_completions(self, request: web.Request) -> web.Response:
        """Stored completions, filtered by ``metadata[key]=value`` query parameters."""
        wanted = {k[len("metadata["):-1]: v for k, v in request.query.items() if k.startswith("metadata[")}
        found = [c for c in self.stored if all(c["metadata"].get(k) == v for k, v in wanted.items())]
        limit = int(request.query.get("limit", "20"))
        return web.json_response({"object": "list", "data": found[:limit], "has_more": len(found) > limit,
                                  "first_id": found[0]["id"] if found else None,
                                  "last_id": found[-1]["id"] if found else None})

    # -- the Batch API -------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        data = upload.file.read() if hasattr(upload, "file") else str(upload).encode()
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": getattr(upload, "filename", "batch.jsonl"), "purpose": "batch",
                                  "status": "processed"})

    async def _file_content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        lines = [json.loads(text) for text in self.files[body["input_file_id"]].decode().splitlines() if text]
        batch_id = f"batch_{len(self.batches) + 1}"
        for line in lines:
            self.batch_creates[line["custom_id"]] += 1
        self.batch_lines[batch_id] = lines
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"], "status": "in_progress", "created_at": int(time.time()),
            "metadata": body.get("metadata") or {}, "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "_created": time.monotonic()}
        return web.json_response(self._public(batch_id))

    async def _list_batches(self, request: web.Request) -> web.Response:
        data = [self._public(b) for b in reversed(list(self.batches))]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        batch = self.batches[batch_id]
        if batch["status"] == "in_progress" and time.monotonic() - batch["_created"] >= self.batch_delay_s:
            self._finish(batch_id, self.batch_outcome)
        elif batch["status"] == "cancelling":
            self._finish(batch_id, "cancelled")
        return web.json_response(self._public(batch_id))

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        self.batches[batch_id]["status"] = "cancelling"
        return web.json_response(self._public(batch_id))

    def _public(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    def _finish(self, batch_id: str, status: str) -> None:
        lines = self.batch_lines[batch_id]
        answered = lines if status == "completed" else lines[: len(lines) // 2]
        outputs, errors = [], []
        for i, line in enumerate(answered):
            model = line["body"]["model"]
            if model.startswith("failline"):
                errors.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": "server_error", "message": "the line failed"}})
                continue
            text = json.dumps({"resolution_key": "exchange_rate", "answer": "We use the interbank rate.",
                               "confidence": 0.9})
            completion = {"id": f"chatcmpl-b{i}", "object": "chat.completion", "created": 1,
                          "model": f"{model}-2026-01-01",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
                                    "prompt_tokens_details": {"cached_tokens": 0}}}
            outputs.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                            "response": {"status_code": 200, "request_id": f"req_{i}", "body": completion},
                            "error": None})
        batch = self.batches[batch_id]
        for name, rows in (("output_file_id", list(reversed(outputs))), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = file_id
        batch["status"] = status
        batch["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
