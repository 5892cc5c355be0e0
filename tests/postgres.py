"""A throwaway PostgreSQL server for the tests, from the OS package (`./run setup` installs it).

TICKETFLOW_TEST_POSTGRES_URL names an existing server instead. The server runs as the
``postgres`` OS user when the tests run as root (PostgreSQL refuses to run as root), on a
free loopback port, with its data in a temporary directory removed afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} not found: install the 'postgresql' OS package (./run setup)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """A running throwaway server: ``url``, and ``stop()``/``start()`` for outage tests."""

    def __init__(self, root: Path, port: int, as_user: list[str]) -> None:
        self.root, self.port, self.as_user = root, port, as_user
        self.data = root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*self.as_user, _bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                        str(self.root / "log"), "-w", "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)

    def stop(self) -> None:
        """As a crash would: immediate shutdown, open connections dropped."""
        subprocess.run([*self.as_user, _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)


@contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A server of the test's own (it may stop and start it)."""
    root = Path(tempfile.mkdtemp(prefix="ticketflow-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(root, _free_port(), as_user)
    subprocess.run([*as_user, _bin("initdb"), "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E",
                    "UTF8"], check=True, capture_output=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    existing = os.environ.get("TICKETFLOW_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    with postgres() as server:
        yield server.url
