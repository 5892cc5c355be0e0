"""Test helpers: worker processes, ticket factories, waiting for results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample
from pipeline.events import DeadLetter, TicketSubmitted
from pipeline.settings import Settings
from pipeline.topic_reader import read_to_end


def worker_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": settings.topic_prefix,
           "TICKETFLOW_STATE_DIR": str(settings.state_dir.resolve())}
    if settings.kafka_bootstrap_servers:
        env["TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    if settings.redis_url:
        env["TICKETFLOW_REDIS_URL"] = settings.redis_url
    env["TICKETFLOW_COMMIT_INTERVAL_MS"] = str(settings.commit_interval_ms)
    # The simulated LLM's latency model, 20x faster: tests check behaviour, benchmarks time.
    env["TICKETFLOW_SIM_TIME_SCALE"] = str(settings.sim_time_scale)
    return env


class WorkerProcess:
    """`ticketflow worker` as a real OS process, so that kill -9 is a real crash."""

    def __init__(self, settings: Settings, log_path: Path, *processors: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.processors = processors
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "--log-level", "INFO", "worker", *self.processors],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**worker_env(self.settings), **self.extra_env},
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def sample_tickets(n: int, tag: str, tenant: str = "acme", seed: int = 11) -> list[TicketSubmitted]:
    return [TicketSubmitted(ticket_id=f"{tag}-{i}", tenant_id=tenant, body=q.text,
                            metadata={"label": q.label})
            for i, q in enumerate(banking77_sample(n, seed))]


def response_counts(client: TicketflowClient, ids: set[str], timeout_s: float) -> Counter[str]:
    """Wait until every id has a response (or the timeout), then read to the end of the topic."""
    for _ in client.results(expect=len(ids), ticket_ids=ids, timeout_s=timeout_s):
        pass
    return Counter(r.event.ticket_id for r in client.results(ticket_ids=ids, drain=True))


def records_seen(client: TicketflowClient, name: str, isolation: str) -> int:
    """How many records of catalog topic ``name`` a reader with ``isolation`` sees."""
    return sum(1 for _ in read_to_end(client.settings.kafka_common(), client.topic(name), isolation))


def dead_letters(client: TicketflowClient) -> list[DeadLetter]:
    return [r.event for r in client.dead_letters(timeout_s=30)]


class Supervisor:
    """Restarts workers that exit on their own, as systemd or Kubernetes would."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is not None:
                    self.restarts += 1
                    worker.start()
