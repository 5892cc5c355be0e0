"""The agent under faults and crashes, through Kafka:

- 30 % of LLM calls fail (429 with Retry-After, 5xx, timeouts, malformed tool calls): every
  ticket still ends resolved or escalated with a reason, none lost, and the provider billed
  exactly the calls the pipeline accounted for;
- agent workers are killed with SIGKILL mid-run: no call is billed twice and no ticket is
  answered twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.adapters.redis_billing import RedisBilling
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.events import TicketResolved, TicketSubmitted, ToolCall
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from tests.helpers import WorkerProcess, accounted, billed, response_counts

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def agent_tickets(n: int, tag: str) -> list[TicketSubmitted]:
    _, held = banking77_split()
    return [TicketSubmitted(ticket_id=f"{tag}-{i}", tenant_id="acme", body=q.text, customer_id=f"C-{1 + i % 50:05d}")
            for i, q in enumerate(banking77_sample(n, seed=3, rows=held))]


def test_with_30_percent_provider_faults_every_ticket_ends_and_billing_matches(settings: Settings,
                                                                               tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    billing.reset()
    tickets = agent_tickets(300, "faulty")
    ids = {t.ticket_id for t in tickets}
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_SIM_FAULT_RATE": "0.3"}
    worker.start()
    try:
        client.submit(tickets)
        counts = response_counts(client, ids, timeout_s=300)
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert set(counts) == ids and max(counts.values()) == 1  # none lost, none answered twice
    resolved = [r.event for r in client.results(ticket_ids=ids, drain=True)]
    escalated = [r for r in resolved if isinstance(r, TicketResolved) and r.path == "escalated"]
    assert all(r.escalation_reason for r in escalated)
    served, usage = accounted(client, ids)
    failures = {u.outcome for u in usage if u.outcome != "ok"}
    assert {"RateLimited", "ProviderUnavailable", "ProviderTimeout"} <= failures, failures
    bill = billed(billing, ids)
    assert max(bill.values()) == 1, {rid: n for rid, n in bill.items() if n > 1}  # no call billed twice
    assert served > 0 and len(bill) == served  # billed_calls == llm_calls
    # every lookup the agent made is about its own ticket's customer: code binds customer_id
    owner = {t.ticket_id: t.customer_id for t in tickets}
    lookups = [c for c in client.events("tools.calls", ToolCall) if c.ticket_id in ids and c.reply_to == "agent"]
    assert lookups and all(json.loads(c.arguments)["customer_id"] == owner[c.ticket_id] for c in lookups)


def test_kill9_of_agent_workers_bills_no_call_twice_and_answers_once(settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    billing.reset()
    tickets = agent_tickets(400, "k9agent")
    ids = {t.ticket_id for t in tickets}
    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log") for i in range(2)]
    for worker in workers:
        worker.extra_env = {"TICKETFLOW_SIM_TIME_SCALE": "0.3"}  # calls in flight long enough to be killed
        worker.start()
    try:
        client.submit(tickets)
        for kill in range(4):
            time.sleep(4)
            victim = workers[kill % 2]
            victim.kill9()
            victim.start()
        counts = response_counts(client, ids, timeout_s=300)
    finally:
        for worker in workers:
            worker.stop()
    assert set(counts) == ids and max(counts.values()) == 1, [t for t, c in counts.items() if c > 1]
    served, _ = accounted(client, ids)
    bill = billed(billing, ids)
    assert max(bill.values()) == 1, {rid: n for rid, n in bill.items() if n > 1}  # no call billed twice
    assert len(bill) == served, (len(bill), served, billing.total())


def test_a_worker_killed_between_the_provider_billing_a_reply_and_recording_it_does_not_buy_it_again(
        settings: Settings, tmp_path: Path) -> None:
    """The window a random kill -9 rarely hits (it failed CI twice), hit on purpose: the
    worker SIGKILLs itself right after the simulated provider billed (and stored) its 5th
    reply. The restarted worker finds that attempt left in flight and recovers the reply."""
    client = TicketflowClient(settings)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    billing.reset()
    tickets = agent_tickets(40, "crashpoint")
    ids = {t.ticket_id for t in tickets}
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(settings, log_path)
    worker.extra_env = {"TICKETFLOW_SIM_CRASH_AFTER_BILLING": "5"}
    worker.start()
    client.submit(tickets)
    assert worker.proc is not None and worker.proc.wait(timeout=240) == -9, log_path.read_text()[-3000:]
    dead = f"pid={worker.proc.pid} "
    lines = [line for rid in billed(billing, ids) for line in billing.lines(rid) if dead in line]
    assert len(lines) == 5  # the 5th billed reply is the one the worker died holding
    lost = max(lines, key=lambda line: float(line.split("served=")[1].split()[0])).split(" ", 1)[0]
    worker.extra_env = {}
    worker.start()
    try:
        counts = response_counts(client, ids, timeout_s=300)
    finally:
        assert worker.stop() == 0, log_path.read_text()[-3000:]
    assert set(counts) == ids and max(counts.values()) == 1
    served, usage = accounted(client, ids)
    bill = billed(billing, ids)
    assert bill[lost] == 1 and max(bill.values()) == 1, {rid: n for rid, n in bill.items() if n > 1}
    assert len(bill) == served  # the recovered reply is accounted, once
    assert [u.record_id for u in usage if u.outcome == "ok" and u.record_id == lost.rsplit(":", 1)[0]], lost
    assert "is recovered, not bought again" in log_path.read_text()
