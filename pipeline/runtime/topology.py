"""The composition root of the processors: which ports each one gets, where it reads.

Until the cache stage (issue 3) exists, the router reads ``tickets.accepted`` directly; it
moves to ``tickets.uncached`` when the cache processor is added.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from pipeline.adapters.redis_idempotency import RedisIdempotencyStore
from pipeline.errors import ConfigurationError
from pipeline.events import TicketSubmitted
from pipeline.processing import SystemClock
from pipeline.runtime.binding import Binding
from pipeline.settings import Settings
from processors.intake import Intake, IntakeLimits
from processors.router import Router


def _intake(settings: Settings) -> Binding:
    client = redis.Redis.from_url(settings.redis_location(), socket_timeout=5,
                                  socket_connect_timeout=5, health_check_interval=30)
    processor = Intake(
        RedisIdempotencyStore(client, settings.idempotency_ttl_s),
        SystemClock(),
        IntakeLimits(settings.max_body_bytes, settings.max_subject_bytes),
        key_prefix=f"ticketflow:{settings.topic_prefix}",
    )
    return Binding(processor.name, ("tickets.ingress",), "TicketSubmitted",
                   TicketSubmitted.from_record, processor.handle, allow_json=True,
                   prepare=processor.prepare)


def _router(settings: Settings) -> Binding:
    processor = Router(SystemClock())
    return Binding(processor.name, ("tickets.accepted",), "TicketSubmitted",
                   TicketSubmitted.from_record, processor.handle)


PROCESSORS: dict[str, Callable[[Settings], Binding]] = {
    "intake": _intake,
    "router": _router,
}


def bindings(settings: Settings, names: list[str] | None = None) -> list[Binding]:
    chosen = names or list(PROCESSORS)
    unknown = [n for n in chosen if n not in PROCESSORS]
    if unknown:
        raise ConfigurationError(
            f"unknown processor(s) {', '.join(unknown)}; known: {', '.join(PROCESSORS)}"
        )
    return [PROCESSORS[name](settings) for name in chosen]
