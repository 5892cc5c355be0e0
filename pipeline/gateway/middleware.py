"""The gateway's ASGI middlewares: the request size limit and the request metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.gateway.models import error

if TYPE_CHECKING:
    from fastapi.responses import JSONResponse

    from pipeline.gateway.app import Gateway


class BodyLimit:
    """413 before a byte over ``max_bytes`` of a request body is read (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_big()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self.too_big()(scope, receive, send)

    def too_big(self) -> JSONResponse:
        return error(413, "too_large", f"the request is over {self.max_bytes} bytes")


class _TooLarge(Exception):
    pass


class Measure:
    """Requests by route and status, and their time, as a plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` (``@app.middleware``) spawned task groups per request and was the
    largest single cost on the event loop at 200 requests/s (py-spy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            app = scope.get("app")
            gateway: Gateway | None = getattr(getattr(app, "state", None), "gateway", None)
            if gateway is not None:
                name = getattr(scope.get("route"), "path", "unmatched")
                gateway.requests.labels(name, str(status[0])).inc()
                gateway.latency.labels(name).observe(time.perf_counter() - started)
