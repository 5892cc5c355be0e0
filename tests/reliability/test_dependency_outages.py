"""A dependency outage is backpressure, never dead letters (issue 12).

Through real Kafka, with one worker running every processor and held-out banking77 tickets
in flight:

- the real Redis is killed (kill -9) and restarted from its append-only file with
  ``ticketflow services up`` after 10 s, and after 60 s (1,000 tickets). Each run asserts:
  every ticket answered exactly once, 0 dead letters, the provider's bill equal to the calls
  accounted on ``llm.usage`` (no call billed twice), the worker reporting Redis down while
  it is, work resuming within 5 s of Redis coming back, every cache write processed (the
  cache writer's group has consumed everything), and the tenant's budget equal to its
  accounted cost;
- the tools' PostgreSQL is stopped (immediate shutdown) for 20 s: every ticket answered
  once, 0 dead letters, and no ticket escalated because of the outage (the tool calls wait
  for the database instead of failing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.adapters.redis_billing import RedisBilling
from pipeline.adapters.sql_bank import SqlBank
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.events import TicketSubmitted
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from pipeline.tools.demo_bank import seed_bank
from tests.helpers import WorkerProcess, assert_books_balance, response_counts, worker_env
from tests.postgres import postgres

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TICKETS = 1000
METRICS_PORT = 9731


def redis_pid(settings: Settings) -> int:
    pid_file = settings.state_dir.resolve() / "redis" / "redis.pid"
    if settings.redis_url is not None or not pid_file.exists():
        pytest.skip("Redis is not the one the tests started (TICKETFLOW_REDIS_URL): it is not ours to kill")
    return int(pid_file.read_text().strip())


def services_up(settings: Settings) -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "services", "up"], env=worker_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def redis_metrics() -> tuple[str | None, float]:
    """The worker's ``ticketflow_dependency_up{dependency="redis"}`` and the longest
    ``ticketflow_dependency_stalled_seconds`` of a processor waiting for Redis."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None, 0.0
    up = [line.split()[-1] for line in text.splitlines()
          if line.startswith('ticketflow_dependency_up{dependency="redis"}')]
    stalled = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("ticketflow_dependency_stalled_seconds{") and 'dependency="redis"' in line]
    return (up[0] if up else None), max(stalled, default=0.0)


def steady_stream(client: TicketflowClient, tickets: list[TicketSubmitted], per_second: float) -> threading.Thread:
    """Submit ``tickets`` at a steady rate from a background thread (as users do)."""
    def feed() -> None:
        start = time.monotonic()
        for i, ticket in enumerate(tickets):
            time.sleep(max(0.0, start + i / per_second - time.monotonic()))
            client.submit([ticket], flush=False)
        client.close()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def held_out(tenant: str, n: int) -> list[TicketSubmitted]:
    _, held = banking77_split()
    return [TicketSubmitted(ticket_id=f"{tenant}-{i}", tenant_id=tenant, body=q.text, customer_id=f"C-{1 + i % 50:05d}")
            for i, q in enumerate(banking77_sample(n, seed=11, rows=held))]


@pytest.mark.parametrize("outage_s", [10, 60])
def test_redis_killed_mid_stream_is_waited_for_not_dead_lettered(settings: Settings, tmp_path: Path,
                                                                  outage_s: int) -> None:
    pid = redis_pid(settings)
    client = TicketflowClient(settings)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    billing.reset()
    tenant = f"outage{outage_s}"
    tickets = held_out(tenant, TICKETS)
    ids = {t.ticket_id for t in tickets}
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_METRICS_PORT": str(METRICS_PORT)}
    worker.start()
    try:
        client.submit(tickets)
        seen = 0
        for _ in client.results(expect=150, ticket_ids=ids, timeout_s=180):
            seen += 1  # the outage begins with the stream well under way
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        down_seen = None
        stalled = 0.0
        while time.time() - killed < outage_s:
            up, waited = redis_metrics()
            stalled = max(stalled, waited)
            if down_seen is None and up == "0.0":
                down_seen = time.time() - killed
            time.sleep(0.5)
        services_up(settings)
        back = time.time()
        counts = response_counts(client, ids, timeout_s=420)
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    log = (tmp_path / "worker.log").read_text()
    served = assert_books_balance(settings, client, billing, ids, counts, [tenant])
    assert down_seen is not None, "ticketflow_dependency_up{dependency=redis} never reported Redis down"
    assert stalled >= outage_s / 2, f"ticketflow_dependency_stalled_seconds peaked at {stalled:.1f} s"
    assert log.count("redis is down") >= 1 and log.count("redis is back") >= 1
    # the stream resumes within 5 s of Redis answering again
    after = sorted(r.event.resolved_at / 1000 for r in client.results(ticket_ids=ids, drain=True)
                   if r.event.resolved_at / 1000 > back)
    assert after and after[0] - back <= 5.0, (after[:3], back)
    print(f"\nredis down {outage_s} s: {seen} answered before; reported down after {down_seen:.1f} s; "
          f"processors stalled up to {stalled:.1f} s; first answer {after[0] - back:.2f} s after it came back; "
          f"{served} calls billed once each")


def test_the_tools_database_stopped_for_20_s_is_waited_for(settings: Settings, tmp_path: Path) -> None:
    if os.environ.get("TICKETFLOW_TEST_POSTGRES_URL"):
        pytest.skip("an existing PostgreSQL (TICKETFLOW_TEST_POSTGRES_URL) is not ours to stop")
    tenant = "pgdown"
    tickets = held_out(tenant, 600)
    ids = {t.ticket_id for t in tickets}
    client = TicketflowClient(settings)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    billing.reset()
    with postgres() as server:
        bank = SqlBank(server.url)
        seed_bank(bank, [tenant], customers=50)
        bank.close()
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.extra_env = {"TICKETFLOW_TOOLS_DATABASE_URL": server.url}
        worker.start()
        try:
            client.submit(tickets)
            for _ in client.results(expect=100, ticket_ids=ids, timeout_s=180):
                pass
            server.stop()
            time.sleep(20)
            server.start()
            counts = response_counts(client, ids, timeout_s=300)
        finally:
            assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    log = (tmp_path / "worker.log").read_text()
    assert_books_balance(settings, client, billing, ids, counts, [tenant])
    assert "sql is down" in log and "sql is back" in log
    resolved = [r.event for r in client.results(ticket_ids=ids, drain=True)]
    by_outage = [r.escalation_reason for r in resolved
                 if r.escalation_reason and any(e in r.escalation_reason for e in ("StoreUnavailable", "CircuitOpen"))]
    assert by_outage == [], by_outage[:5]
    paths = {r.path for r in resolved}
    assert "tool" in paths, paths  # the outage hit tool calls


def test_a_slow_then_partitioned_redis_is_waited_for(settings: Settings, tmp_path: Path) -> None:
    """Redis behind a loopback proxy: every chunk delayed 30 ms each way for 10 s, then every
    connection dropped (and new ones closed) for 5 s, then healthy again."""
    from tests.tcp_proxy import TcpProxy

    client = TicketflowClient(settings)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    billing.reset()
    tenant = "slowredis"
    tickets = held_out(tenant, 400)
    ids = {t.ticket_id for t in tickets}
    proxy = TcpProxy(settings.local_redis_port).start()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
    worker.start()
    feeder = None
    try:
        client.submit(tickets[:60])
        for _ in client.results(expect=30, ticket_ids=ids, timeout_s=180):
            pass
        # A steady stream (20 tickets/s for 17 s) spans the slow and the partitioned phase, so
        # work reaches Redis while it is unreachable however fast the machine drains a backlog.
        feeder = steady_stream(client, tickets[60:], per_second=20)
        proxy.delay_s = 0.03
        time.sleep(10)
        proxy.drop()
        time.sleep(5)
        proxy.drop(False)
        proxy.delay_s = 0.0
        feeder.join(60)
        counts = response_counts(client, ids, timeout_s=300)
    finally:
        if feeder is not None:
            feeder.join(60)
        code = worker.stop()
        proxy.close()
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert_books_balance(settings, client, billing, ids, counts, [tenant])
    assert "redis is down" in log and "redis is back" in log
