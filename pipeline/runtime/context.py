"""What the processors of one worker process share: settings, the metrics registry, the
dependency probes, one Redis client, and parts built once (the embedder, the LLM loop)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.runtime.failures import DependencyHealth
from pipeline.settings import Settings


@dataclass
class WorkerContext:
    """What the processors of one worker process share."""

    settings: Settings
    instance_id: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    health: DependencyHealth | None = None  # the worker's dependency probes
    _shared: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def shared(self, name: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._shared:
                self._shared[name] = make()
            return self._shared[name]

    def redis(self) -> redis.Redis[bytes]:
        client: redis.Redis[bytes] = self.shared("redis", lambda: redis_client(self.settings))
        return client

    def key_prefix(self) -> str:
        return self.settings.redis_key_prefix()

    def close(self) -> None:
        for name in ("cache", "embedder", "tool_runner", "bank", "llm_loop"):
            part = self._shared.get(name)
            if part is not None:
                part.close()


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """The processors' Redis client. One immediate retry (a pooled connection that went stale
    when Redis restarted), not redis-py's default ten with backoff: those held each call
    against a dead Redis for about 4 s, and re-sent commands on their own. An outage is the
    runtime's to wait for (pipeline.runtime.failures)."""
    return redis.Redis.from_url(settings.redis_location(), socket_timeout=5, socket_connect_timeout=5,
                                health_check_interval=30, retry=Retry(NoBackoff(), 1))


def dependency_probes(settings: Settings) -> dict[str, Callable[[], object]]:
    """The health probes of the dependencies the processors' adapters name (pipeline.faults):
    Redis answers PING; the tools' database (when one is configured) answers SELECT 1."""
    probe = redis.Redis.from_url(settings.redis_location(), socket_timeout=1, socket_connect_timeout=1)
    probes: dict[str, Callable[[], object]] = {"redis": probe.ping}
    if settings.tools_database_url:
        import sqlalchemy as sa

        engine = sa.create_engine(settings.tools_database_url, pool_pre_ping=True)

        def sql() -> object:
            with engine.connect() as connection:
                return connection.execute(sa.text("SELECT 1")).scalar()
        probes["sql"] = sql
    return probes
