"""Test helpers: worker processes, ticket factories, waiting for results."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.adapters.redis_billing import RedisBilling
from pipeline.adapters.redis_budget import RedisBudgets
from pipeline.cache.audit import audited_ticket
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample
from pipeline.events import DeadLetter, TicketSubmitted, UsageRecord
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from pipeline.topic_reader import read_to_end

# The agent's per-ticket cost cap (Limits.max_cost_micros): no reservation is larger.
ONE_RESERVATION_MICROS = 60_000


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


def last_failure_lines(log_path: Path, lines: int = 40) -> str:
    """The last CRITICAL/ERROR lines of a worker's log and what follows the last of them (a
    traceback, the watchdog's stack dump)."""
    text = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    marks = [i for i, line in enumerate(text) if " CRITICAL " in line or " ERROR " in line]
    start = marks[-1] if marks else len(text)
    return "\n".join([text[i] for i in marks[-5:-1]] + text[start:start + lines])


class Supervisor:
    """Restarts workers that exit on their own, as systemd or Kubernetes would."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.restarts = 0
        #: why each restarted worker had exited: its exit code and its log's last critical or
        #: error lines (the watchdog's "batch stuck" names the processor and dumps the stacks)
        self.exits: list[str] = []
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
                    self.exits.append(f"{worker.log_path.name} exited with {worker.proc.returncode}: "
                                      + last_failure_lines(worker.log_path))
                    worker.start()


def ours(ticket_id: str | None, ids: set[str]) -> bool:
    """One of the test's tickets, or the cache audit's re-answer of one (its calls are billed too)."""
    return ticket_id is not None and audited_ticket(ticket_id) in ids


def accounted(client: TicketflowClient, ids: set[str]) -> tuple[int, list[UsageRecord]]:
    usage = [u for u in client.events("llm.usage", UsageRecord, timeout_s=30)
             if ours(u.ticket_id, ids) and u.kind == "llm"]
    served = {u.record_id for u in usage if u.outcome == "ok"}
    assert len(served) == sum(1 for u in usage if u.outcome == "ok"), "a served call was recorded twice"
    return len(served), usage


def billed(billing: RedisBilling, ids: set[str]) -> dict[str, int]:
    """The provider's bill for these tickets' calls (their cache audits' included), per request
    id (ticket:step:tier:attempt): a count above 1 is a call billed twice."""
    return {rid: n for rid, n in billing.calls().items() if ours(rid.rsplit(":", 3)[0], ids)}


def unconsumed(settings: Settings, group: str, topic: str) -> int:
    """Records of ``topic`` (read_committed) at or past consumer group ``group``'s committed
    offsets. (Not the high watermark minus the offset: transaction markers take offsets too.)"""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient(settings.kafka_common())
    metadata = admin.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])[group].result()
    position = {tp.partition: tp.offset for tp in committed.topic_partitions}
    return sum(1 for message in read_to_end(settings.kafka_common(), topic, "read_committed")
               if message.offset() >= position.get(message.partition(), -1))


def assert_books_balance(settings: Settings, client: TicketflowClient, billing: RedisBilling, ids: set[str],
                         counts: Counter[str], tenants: list[str]) -> int:
    """What every fault test asserts after its fault: every ticket answered exactly once, no
    dead letter, no call billed twice and every billed call accounted on ``llm.usage``, every
    cache write processed (the cache writer's group has consumed all), and each tenant's
    budget within one reservation of its accounted cost. Returns the calls served."""
    lost = ids - set(counts)
    assert not lost, f"{len(lost)} of {len(ids)} not answered, e.g. {sorted(lost)[:5]}"
    assert max(counts.values()) == 1, [t for t, c in counts.items() if c > 1][:10]
    letters = dead_letters(client)
    assert letters == [], [(d.processor, d.error_class, d.error_message[:200]) for d in letters[:5]]
    served, usage = accounted(client, ids)
    bill = billed(billing, ids)
    assert not bill or max(bill.values()) == 1, {rid: billing.lines(rid) for rid, n in bill.items() if n > 1}
    assert len(bill) == served, (len(bill), served)
    assert unconsumed(settings, f"{settings.topic_prefix}ticketflow.cache-writer",
                      client.topic("tickets.responses")) == 0
    budgets = RedisBudgets(redis_client(settings), settings.redis_key_prefix())
    for tenant in tenants:
        cost = sum(u.cost_micros for u in usage if u.outcome == "ok" and u.tenant_id == tenant)
        assert abs(budgets.spent(tenant) - cost) <= ONE_RESERVATION_MICROS, (tenant, budgets.spent(tenant), cost)
    return served


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
