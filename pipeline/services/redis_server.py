"""Redis from the OS package (``redis-server``), on loopback, data under ``STATE/redis``."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import redis

from pipeline.errors import ServiceError
from pipeline.services.process import read_pid, terminate
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.services import ServiceStatus

START_TIMEOUT_S = 20.0


class RedisServer:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir.resolve() / "redis"
        self.pid_file = self.home / "redis.pid"

    @property
    def external(self) -> bool:
        return self.settings.redis_url is not None

    def status(self) -> ServiceStatus:
        from pipeline.services import ServiceStatus

        address = self.settings.redis_location()
        if self.external:
            return ServiceStatus(self.name, False, self._answers(), address, "external")
        pid = read_pid(self.pid_file)
        if pid is None:
            if self._answers():
                return ServiceStatus(self.name, False, True, address, "not started from this state directory")
            return ServiceStatus(self.name, True, False, address, "stopped")
        return ServiceStatus(self.name, True, self._answers(), address, f"pid {pid}")

    def up(self, adopt: bool = False) -> ServiceStatus:
        """Start Redis unless it runs; ``adopt`` uses a Redis already answering locally."""
        if self.external:
            current = self.status()
            if not current.running:
                raise ServiceError(f"configured Redis at {current.address} does not answer")
            return current
        if read_pid(self.pid_file) is None:
            if self._answers():
                if adopt:
                    return self.status()
                raise ServiceError(
                    f"something else already listens on {self.settings.redis_location()}; "
                    "set TICKETFLOW_REDIS_URL to use it, or free the port"
                )
            self._start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._answers():
                return self.status()
            time.sleep(0.1)
        raise ServiceError(f"Redis did not answer within {START_TIMEOUT_S:.0f} s")

    def down(self) -> ServiceStatus:
        if not self.external:
            pid = read_pid(self.pid_file)
            if pid is not None:
                terminate(pid, grace_s=10)
        return self.status()

    def _start(self) -> None:
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
             # Idempotency keys and budgets must survive a restart: append-only file.
             "--appendonly", "yes", "--save", ""],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"redis-server failed to start: {result.stderr or result.stdout}")

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.settings.redis_location(), socket_timeout=1,
                                      socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
