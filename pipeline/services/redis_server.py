"""Redis from the OS package (``redis-server``), on loopback, data under ``STATE/redis``."""

from __future__ import annotations

import shutil
import subprocess

import redis

from pipeline.errors import ServiceError
from pipeline.services.base import LocalService
from pipeline.settings import Settings


class RedisServer(LocalService):
    name = "redis"
    start_timeout_s = 20.0
    stop_grace_s = 10.0
    external_variable = "TICKETFLOW_REDIS_URL"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir.resolve() / "redis"
        self.pid_file = self.home / "redis.pid"

    @property
    def external(self) -> bool:
        return self.settings.redis_url is not None

    @property
    def address(self) -> str:
        return self.settings.redis_location()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server is not installed: `apt-get install redis-server` "
                "(./run does this), or set TICKETFLOW_REDIS_URL"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [binary, "--bind", "127.0.0.1", "--port", str(self.settings.local_redis_port),
             "--daemonize", "yes", "--pidfile", str(self.pid_file), "--dir", str(self.home),
             "--logfile", str(self.home / "redis.log"),
             # Idempotency keys, budgets and recorded LLM replies must survive a restart, a
             # kill -9 included: append-only file, fsynced at every write (with the default
             # once a second, a killed Redis forgot the last second's recorded replies, and
             # the steps that ran again paid their calls twice).
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"redis-server failed to start: {result.stderr or result.stdout}")

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.address, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
