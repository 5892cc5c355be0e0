"""The live audit through Kafka: a worker process, real Redis, the embedded Qdrant Edge.

A tenant's cache is seeded with deliberately wrong answers for one intent (Apple Pay
questions filed under ``exchange_rate``). With the second opinion off (so that wrong entries
are served at all) and every hit audited, the router re-answers the audited hits on the
batch lane, the audit finds them wrong, publishes its estimate and tightens the tenant's
policy within a bounded number of hits; the customers' egress never sees an audit answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.adapters.redis_audit import RedisAuditLedger
from pipeline.cache.audit import MIN_AUDITS, is_audit
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77
from pipeline.events import CacheAudit, CacheFeedback, CacheUpdate, TicketResolved, TicketSubmitted
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from tests.helpers import WorkerProcess, worker_env

pytestmark = pytest.mark.integration

TENANT = "wrongco"
# Everything but the cache writer: the answers to the probing questions must not enter the
# cache beside the entries these tests seed (a right rule entry next to a wrong seed turns
# every later lookup into a disagreement, and the test would depend on who came first).
PROCESSORS = ("intake", "cache", "router", "tools", "cache-audit", "accounting")


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path / "worker.log", *PROCESSORS)
    process.extra_env = {"TICKETFLOW_AGENT_ENABLED": "false", "TICKETFLOW_CACHE_SECOND_OPINION": "false",
                         "TICKETFLOW_CACHE_AUDIT_SHARE": "1.0"}
    process.start()
    yield process
    assert process.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_a_wrongly_seeded_intent_is_caught_by_the_audit_and_the_policy_tightened(
        settings: Settings, worker: WorkerProcess) -> None:
    client = TicketflowClient(settings)
    pay = [q.text for q in banking77() if q.label == "apple_pay_or_google_pay"]
    seeds, queries = pay[:60], pay[60:100]
    now = int(time.time() * 1000)
    client.cache_updates([CacheUpdate(tenant_id=TENANT, op="upsert", created_at=now, entry_id=f"seed:wrong.csv:{i}",
                                      text=text, answer="Our exchange rate is the interbank rate.",
                                      resolution_key="exchange_rate", kb_version="1", expires_at=now + 3_600_000,
                                      source="seed") for i, text in enumerate(seeds)])
    ids: list[str] = []
    served_wrong = 0
    deadline = time.monotonic() + 180
    for text in queries:  # one at a time: each hit's audit lands before the next lookup
        ticket = TicketSubmitted(ticket_id=f"w-{uuid.uuid4().hex[:10]}", tenant_id=TENANT, body=text)
        client.submit([ticket])
        ids.append(ticket.ticket_id)
        for received in client.results(expect=1, ticket_ids={ticket.ticket_id}, timeout_s=60):
            resolved: TicketResolved = received.event
            served_wrong += resolved.path == "cache" and resolved.resolution_key == "exchange_rate"
        if _level(settings) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)

    records = _audits(client, set(ids), expect=MIN_AUDITS)
    assert len(records) >= MIN_AUDITS, f"only {len(records)} audits of {served_wrong} wrong hits"
    assert all(not r.agreed and r.served_key == "exchange_rate" and r.audit_key == "apple_pay_or_google_pay"
               for r in records)
    assert max(r.policy_level for r in records) >= 1, "the audit did not tighten the tenant's policy"
    first_tightened = min(r.audited for r in records if r.policy_level >= 1)
    assert first_tightened <= MIN_AUDITS + 2  # bounded: as soon as the interval may speak
    assert records[-1].precision_high < settings.cache_audit_target
    history = RedisAuditLedger(redis_client(settings), settings.redis_key_prefix()).history(TENANT)
    assert any("below the target" in str(entry["reason"]) for entry in history)

    # the customers' egress never carries an audit answer; the replay egress does
    egress = client.events("tickets.responses", TicketResolved, timeout_s=10)
    assert not [r for r in egress if is_audit(r.replay_tag) or r.ticket_id.endswith("#audit")]
    replayed = client.events("tickets.replay.responses", TicketResolved, timeout_s=10)
    assert {r.ticket_id for r in replayed} >= {f"{r.ticket_id}#audit" for r in records}

    # reversible: the operator's reset is recorded and the level is back to 0
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "cache", "policy", "--tenant", TENANT,
                           "--reset", "--json"], env=worker_env(settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["policy_level"] == 0 and report["history"][-1]["reason"].startswith("operator reset")


def test_feedback_removes_the_entry_behind_a_wrong_answer(settings: Settings, tmp_path: Path) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log", *PROCESSORS)
    worker.extra_env = {"TICKETFLOW_AGENT_ENABLED": "false", "TICKETFLOW_CACHE_AUDIT_SHARE": "0",
                        "TICKETFLOW_CACHE_SECOND_OPINION": "false"}
    worker.start()
    try:
        client = TicketflowClient(settings)
        question = "Can I add my card to Apple Pay?"
        now = int(time.time() * 1000)
        client.cache_updates([CacheUpdate(tenant_id="desk", op="upsert", created_at=now, entry_id="seed:f.csv:2",
                                          text=question, answer="wrong", resolution_key="exchange_rate",
                                          kb_version="1", expires_at=now + 3_600_000, source="seed")])
        hit = _ask_until(client, "desk", question, lambda r: r.path == "cache")
        assert hit.path == "cache" and hit.cache_entry_id == "seed:f.csv:2", hit
        client.feedback([CacheFeedback(ticket_id=hit.ticket_id, tenant_id="desk", verdict="reject",
                                       created_at=int(time.time() * 1000), cache_entry_id=hit.cache_entry_id)])
        after = _ask_until(client, "desk", question, lambda r: r.path != "cache")
        assert after.path != "cache"
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]


def _ask_until(client: TicketflowClient, tenant: str, text: str, done: Callable[[TicketResolved], bool],
               timeout_s: float = 90) -> TicketResolved:
    deadline = time.monotonic() + timeout_s
    while True:
        ticket = TicketSubmitted(ticket_id=f"f-{uuid.uuid4().hex[:10]}", tenant_id=tenant, body=text)
        client.submit([ticket])
        for received in client.results(expect=1, ticket_ids={ticket.ticket_id}, timeout_s=60):
            resolved: TicketResolved = received.event
            if done(resolved) or time.monotonic() > deadline:
                return resolved
        time.sleep(0.5)


def _level(settings: Settings) -> int:
    return RedisAuditLedger(redis_client(settings), settings.redis_key_prefix()).state(TENANT).level


def _audits(client: TicketflowClient, ids: set[str], expect: int, timeout_s: float = 60) -> list[CacheAudit]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = sorted((r for r in client.events("pipeline.metrics", CacheAudit, timeout_s=10)
                          if r.ticket_id in ids), key=lambda r: r.audited)
        if len(records) >= expect or time.monotonic() > deadline:
            return records
        time.sleep(1)
