"""The gateway's HTTP API (FastAPI on uvicorn).

FastAPI rather than aiohttp: the request models are the validation (422 names the field at
fault) and the OpenAPI document is generated from the same code, so the property-based
tests (schemathesis) check the server against the spec it actually serves. confluent-kafka's
asyncio producer sends tickets; one fan-out consumer per process (pipeline/gateway/fanout.py)
wakes the requests that wait and feeds the event streams.

Errors are JSON, ``{"error": {"code", "message", "field"}}``: 401 without a valid key, 404
for an unknown ticket or another tenant's, 413 over the request size limit, 422 for
invalid input (the same checks as intake), 429 with ``Retry-After`` over the tenant's rate,
503 with ``Retry-After`` while Kafka or Redis is unreachable. Bad input never gets a 5xx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from confluent_kafka import KafkaException
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.errors import SchemaError
from pipeline.events import TicketSubmitted, to_record
from pipeline.gateway.fanout import RESOLVED, FanOut, Progress
from pipeline.gateway.keys import KeyLookup
from pipeline.gateway.middleware import BodyLimit, Measure
from pipeline.gateway.models import (
    ERRORS,
    Accepted,
    ErrorBody,
    Health,
    Rejected,
    Resolved,
    TicketIn,
    error,
    unavailable,
)
from pipeline.gateway.producer import AsyncProducer
from pipeline.gateway.status import TicketStatus, resolved_writer
from pipeline.runtime.context import redis_client
from pipeline.runtime.worker import make_serde
from pipeline.settings import Settings
from processors.intake import IntakeLimits, normalise, ticket_problem

log = logging.getLogger(__name__)

MAX_WAIT_S = 60
#: ``serve --workers N``: the settings each gateway process builds its app from (JSON)
SETTINGS_ENV = "TF_GATEWAY_SETTINGS_JSON"
#: the cyclic collector's generation thresholds while serving (CPython's: 700, 10, 10)
GC_THRESHOLDS = (20_000, 20, 20)


@dataclass
class Gateway:
    settings: Settings
    redis: aioredis.Redis[bytes]
    keys: KeyLookup
    status: TicketStatus
    producer: AsyncProducer
    fanout: FanOut
    serde: Any
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    limits: IntakeLimits


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prefix = settings.redis_key_prefix()
        client = aioredis.Redis.from_url(settings.redis_location(), socket_timeout=5, socket_connect_timeout=5)
        sync_redis = redis_client(settings)
        serde = make_serde(settings)
        loop = asyncio.get_running_loop()
        producer = AsyncProducer({**settings.kafka_common(), "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 2}, loop)
        fanout = FanOut(settings, serde, loop, resolved_writer(sync_redis, prefix))
        registry = CollectorRegistry()
        app.state.gateway = Gateway(
            settings, client, KeyLookup(client, prefix), TicketStatus(client, prefix), producer, fanout, serde,
            registry,
            Counter("ticketflow_gateway_requests_total", "HTTP requests by route and status",
                    ["route", "status"], registry=registry),
            Histogram("ticketflow_gateway_request_seconds", "time to answer a request, by route", ["route"],
                      registry=registry, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60)),
            IntakeLimits(settings.max_body_bytes, settings.max_subject_bytes))
        fanout.start()
        await asyncio.get_running_loop().run_in_executor(None, fanout.ready.wait, 30)
        # Everything made so far lives as long as the process: out of the collector's way (it
        # took 15 % of the event loop at 200 requests/s, traversing the modules, FastAPI's
        # routes and the pending requests), and young objects collected less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("gateway: serving; fan-out reading %s", sorted(fanout.topics))
        try:
            yield
        finally:
            fanout.close()
            await loop.run_in_executor(None, producer.close)
            await client.close()

    app = FastAPI(title="ticketflow gateway", version="1", lifespan=lifespan,
                  description="Post support tickets, wait for or stream their answers. The tenant comes from "
                              "the API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`).")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        loc = [str(part) for part in first.get("loc", ())]
        if loc and loc[0] in ("body", "query", "header", "path"):
            loc = loc[1:]
        field = ".".join(loc) or None
        message = str(first.get("msg", "invalid"))
        if first.get("type") == "extra_forbidden" and loc == ["tenant_id"]:
            message = "tenant_id must not be sent: the tenant comes from the API key"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field {field!r}"
        return error(422, "invalid", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return exc.response

    def gw(request: Request) -> Gateway:
        gateway: Gateway = request.app.state.gateway
        return gateway

    async def tenant_of(request: Request, authorization: str | None, x_api_key: str | None) -> str:
        key = x_api_key or ""
        if authorization:
            scheme, _, value = authorization.partition(" ")
            key = value.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise Rejected(error(401, "unauthorized", "an API key is needed (Authorization: Bearer KEY)",
                                 headers={"WWW-Authenticate": "Bearer"}))
        try:
            tenant = await gw(request).keys.tenant(key)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Rejected(unavailable("redis", exc)) from exc
        if tenant is None:
            raise Rejected(error(401, "unauthorized", "the API key is not valid (unknown or revoked)",
                                 headers={"WWW-Authenticate": "Bearer"}))
        return tenant

    @app.post("/v1/tickets", status_code=202, response_model=Accepted,
              responses={200: {"model": Resolved, "description": "answered within `wait` seconds"},
                         409: {"model": ErrorBody, "description": "the Idempotency-Key was used for another "
                                                                  "request body"}, **ERRORS})
    async def post_ticket(ticket: TicketIn, request: Request,
                          wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="seconds to wait for the answer"),
                          authorization: str | None = Header(None), x_api_key: str | None = Header(None),
                          idempotency_key: str | None = Header(None, max_length=255)) -> Response:
        handling_ms = time.time() * 1000
        gateway = gw(request)
        tenant = await tenant_of(request, authorization, x_api_key)
        ticket_id = ticket.ticket_id or f"gw-{uuid.uuid4().hex}"
        now = int(time.time() * 1000)
        event = TicketSubmitted(ticket_id=ticket_id, tenant_id=tenant, body=ticket.body,
                                customer_id=ticket.customer_id, subject=ticket.subject, lane=ticket.lane,
                                channel="api", created_at=now, metadata=dict(ticket.metadata))
        problem = ticket_problem(event, gateway.limits, now)
        if problem is None and not normalise(ticket.body):
            problem = "body is empty after normalisation (only spaces or control characters)"
        if problem is not None:
            return error(422, "invalid", problem, problem.split(" ", 1)[0])
        topic = gateway.settings.topic_prefix + "tickets.ingress"
        try:
            value = gateway.serde.encode(TicketSubmitted.SCHEMA, to_record(event), topic)
        except (SchemaError, UnicodeError) as exc:  # e.g. a lone surrogate: JSON allows it, UTF-8 does not
            return error(422, "invalid", f"the ticket cannot be encoded: {exc}", None)
        rate, burst = gateway.settings.gateway_rate_per_s, gateway.settings.gateway_rate_burst
        try:
            if idempotency_key:  # the ticket id may be an earlier request's: counted, then marked
                retry = await gateway.status.rate_wait_s(tenant, rate, burst)
            else:  # counted and marked pending in one round trip
                retry = await gateway.status.admit(tenant, ticket_id, now, rate, burst)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return unavailable("redis", exc)
        if retry > 0:
            return error(429, "rate_limited", f"over {rate:g} requests/s for tenant {tenant}",
                         headers={"Retry-After": str(max(1, math.ceil(retry)))})
        if idempotency_key:
            try:
                digest = hashlib.sha256(ticket.model_dump_json().encode()).hexdigest()
                earlier = await gateway.status.claim_idempotency_key(tenant, idempotency_key, ticket_id, digest)
                if earlier is not None:
                    if earlier[1] != digest:
                        return error(409, "idempotency_key_reused", "this Idempotency-Key was used for another "
                                     "request body", "Idempotency-Key")
                    ticket_id = earlier[0]  # the same request again: the same ticket
                    event = dataclasses.replace(event, ticket_id=ticket_id)
                    value = gateway.serde.encode(TicketSubmitted.SCHEMA, to_record(event), topic)
                await gateway.status.pending(tenant, ticket_id, now)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                return unavailable("redis", exc)
        key = (tenant, ticket_id)
        queue = gateway.fanout.listen(key, progress=False) if wait > 0 else None
        try:
            try:
                producing_ms = time.time() * 1000
                delivered = gateway.producer.produce(topic, value=value, key=ticket_id.encode())
                async with asyncio.timeout(gateway.settings.gateway_produce_timeout_s):  # no task, unlike wait_for
                    await delivered
            except (KafkaException, TimeoutError) as exc:
                return unavailable("kafka", exc)
            location = f"/v1/tickets/{ticket_id}"
            if queue is not None:
                answer = await _resolution(gateway, key, queue, wait)
                if answer is not None:
                    # Server-Timing: the pipeline's share, what a Kafka client of its own would
                    # wait (from the produce call to the answer read back), so a client can tell
                    # the gateway's own time (keys, limits, idempotency, HTTP) apart; and the
                    # handler's whole time (what is left of the client's time is HTTP, the
                    # framework, and waiting for the event loop on either side); of it, what
                    # came before the produce call and the wake-up (the fan-out read the answer)
                    now_ms = time.time() * 1000
                    pipeline_ms = max(0.0, answer.seen_ms - producing_ms) if answer.seen_ms else 0.0
                    wake_ms = max(0.0, now_ms - answer.seen_ms) if answer.seen_ms else 0.0
                    return JSONResponse(answer.data, status_code=200, headers={
                        "Location": location,
                        "Server-Timing": f"pipeline;dur={pipeline_ms:.1f}, handler;dur={now_ms - handling_ms:.1f}, "
                                         f"admit;dur={producing_ms - handling_ms:.1f}, wake;dur={wake_ms:.1f}"})
            return JSONResponse({"ticket_id": ticket_id, "status": "pending", "location": location},
                                status_code=202, headers={"Location": location})
        finally:
            if queue is not None:
                gateway.fanout.unlisten(key, queue, progress=False)

    @app.get("/v1/tickets/{ticket_id}", response_model=Resolved,
             responses={202: {"model": Accepted, "description": "accepted, not answered yet"},
                        404: {"model": ErrorBody, "description": "no such ticket for this tenant"}, **ERRORS})
    async def get_ticket(ticket_id: str, request: Request, authorization: str | None = Header(None),
                         x_api_key: str | None = Header(None)) -> Response:
        gateway = gw(request)
        tenant = await tenant_of(request, authorization, x_api_key)
        done = gateway.fanout.resolved((tenant, ticket_id))
        if done is not None:
            return JSONResponse(done.data)
        try:
            known = await gateway.status.get(tenant, ticket_id)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return unavailable("redis", exc)
        if known is None:
            return error(404, "not_found", f"no ticket {ticket_id!r} for this tenant")
        location = f"/v1/tickets/{ticket_id}"
        if known.get("status") == "resolved":
            return JSONResponse(known)
        return JSONResponse({"ticket_id": ticket_id, "status": "pending", "location": location}, status_code=202,
                            headers={"Location": location})

    @app.get("/v1/tickets/{ticket_id}/events",
             responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
                        404: {"model": ErrorBody, "description": "no such ticket for this tenant"}, **ERRORS})
    async def ticket_events(ticket_id: str, request: Request, authorization: str | None = Header(None),
                            x_api_key: str | None = Header(None),
                            last_event_id: str | None = Header(None)) -> Response:
        gateway = gw(request)
        tenant = await tenant_of(request, authorization, x_api_key)
        key = (tenant, ticket_id)
        try:
            known = await gateway.status.get(tenant, ticket_id)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return unavailable("redis", exc)
        if known is None and not gateway.fanout.history(key):
            return error(404, "not_found", f"no ticket {ticket_id!r} for this tenant")
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
        queue = gateway.fanout.listen(key)

        async def stream() -> AsyncIterator[str]:
            try:
                sent = after
                backlog = gateway.fanout.history(key)
                if known is not None and known.get("status") == "resolved" and not any(
                        e.id == RESOLVED for e in backlog):
                    backlog.append(Progress(RESOLVED, "resolved", known))
                for progress in backlog:
                    if progress.id > sent:
                        sent = progress.id
                        yield progress.sse()
                while sent < RESOLVED:
                    try:
                        progress = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if progress.id > sent:
                        sent = progress.id
                        yield progress.sse()
            finally:
                gateway.fanout.unlisten(key, queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "degraded"}})
    async def healthz(request: Request) -> JSONResponse:
        gateway = gw(request)
        try:
            redis_ok = bool(await asyncio.wait_for(gateway.redis.ping(), 2))
        except (redis.ConnectionError, redis.TimeoutError, TimeoutError):
            redis_ok = False
        fanout_ok = gateway.fanout.ready.is_set()
        kafka_ok = await asyncio.get_running_loop().run_in_executor(None, gateway.producer.healthy)
        healthy = redis_ok and fanout_ok and kafka_ok
        return JSONResponse({"status": "ok" if healthy else "degraded", "kafka": kafka_ok, "redis": redis_ok,
                             "fanout": fanout_ok}, status_code=200 if healthy else 503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(_exposed(gw(request).registry)), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_request_bytes)
    app.add_middleware(Measure)
    return app


def app_from_environment() -> FastAPI:
    """The app of one of ``serve --workers N``'s processes (uvicorn's factory)."""
    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]))


def _exposed(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics shows: this process's registry, or with several gateway processes
    (``PROMETHEUS_MULTIPROC_DIR``) every process's counters added up, whichever one answers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


async def _resolution(gateway: Gateway, key: tuple[str, str], queue: asyncio.Queue[Progress],
                      wait: float) -> Progress | None:
    done = gateway.fanout.resolved(key)
    if done is not None:
        return done
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        try:
            async with asyncio.timeout(left):  # wait_for would wrap queue.get() in a task of its own
                progress = await queue.get()
        except TimeoutError:
            return None
        if progress.id == RESOLVED:
            return progress
