"""What the local services share: status, idempotent start, stop, adoption of a running one."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ServiceError
from pipeline.services.process import read_pid, terminate

# A daemonising server writes its pid file a moment after it was launched.
PID_FILE_GRACE_S = 5.0


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    managed: bool  # started from this state directory (False: external or someone else's)
    running: bool
    address: str
    detail: str = ""


class LocalService(ABC):
    """A service ticketflow starts on loopback unless one is configured (``external``)."""

    name: str
    pid_file: Path
    start_timeout_s: float
    stop_grace_s: float
    external_variable: str  # the setting that names an external service

    @property
    @abstractmethod
    def external(self) -> bool: ...

    @property
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def answers(self) -> bool:
        """Does the service at ``address`` answer now (a short probe)?"""

    @abstractmethod
    def start(self) -> None:
        """Launch the service detached; it writes or we write ``pid_file``."""

    def status(self) -> ServiceStatus:
        if self.external:
            return ServiceStatus(self.name, False, self.answers(), self.address, "external")
        pid = read_pid(self.pid_file)
        if pid is None:
            if self.answers():
                return ServiceStatus(self.name, False, True, self.address,
                                     "not started from this state directory")
            return ServiceStatus(self.name, True, False, self.address, "stopped")
        return ServiceStatus(self.name, True, self.answers(), self.address, f"pid {pid}")

    def up(self, adopt: bool = False) -> ServiceStatus:
        """Start unless running, and wait until it answers. ``adopt`` uses a service that
        already answers at the local address (another checkout's) instead of refusing."""
        if self.external:
            current = self.status()
            if not current.running:
                raise ServiceError(f"configured {self.name} at {current.address} does not answer")
            return current
        if read_pid(self.pid_file) is None:
            if self.answers():
                if adopt:
                    return self.status()
                raise ServiceError(
                    f"something else already listens on {self.address}; set "
                    f"{self.external_variable} to use it, or free the port"
                )
            self.start()
        started = time.monotonic()
        while time.monotonic() - started < self.start_timeout_s:
            pid = read_pid(self.pid_file)  # None once the process is gone
            if pid is not None and self.answers():
                return self.status()
            if pid is None and time.monotonic() - started > PID_FILE_GRACE_S:
                raise ServiceError(f"{self.name} exited during start-up; see its log under "
                                   f"{self.pid_file.parent}")
            time.sleep(0.3)
        raise ServiceError(f"{self.name} did not answer within {self.start_timeout_s:.0f} s")

    def down(self) -> ServiceStatus:
        if not self.external:
            pid = read_pid(self.pid_file)
            if pid is not None:
                terminate(pid, grace_s=self.stop_grace_s)
        return self.status()
