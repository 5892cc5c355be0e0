"""Local infrastructure: a single-node Kafka broker (KRaft) and Redis, started on loopback.

When ``TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS`` or ``TICKETFLOW_REDIS_URL`` is set, that
service is external: nothing is started or stopped, and ``status`` only checks it answers.
"""

from __future__ import annotations

from pipeline.services.base import ServiceStatus
from pipeline.services.kafka_broker import KafkaBroker
from pipeline.services.redis_server import RedisServer
from pipeline.settings import Settings

__all__ = ["KafkaBroker", "RedisServer", "ServiceStatus", "down", "services", "status", "up"]


def services(settings: Settings) -> tuple[KafkaBroker, RedisServer]:
    return KafkaBroker(settings), RedisServer(settings)


def up(settings: Settings, adopt: bool = False) -> list[ServiceStatus]:
    """Start what is not configured externally and not yet running; wait until it answers.

    With ``adopt``, a service that already answers at the local address but was not started
    from this state directory is used as it is (the test session does this).
    """
    return [svc.up(adopt) for svc in services(settings)]


def down(settings: Settings) -> list[ServiceStatus]:
    return [svc.down() for svc in services(settings)]


def status(settings: Settings) -> list[ServiceStatus]:
    return [svc.status() for svc in services(settings)]
