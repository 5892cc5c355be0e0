"""The cache stage through Kafka: a worker process, real Redis, the embedded Qdrant Edge."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters.redis_kb import RedisKbVersions
from pipeline.client import TicketflowClient
from pipeline.events import CacheUpdate, TicketResolved, TicketSubmitted, UsageRecord, to_record
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from tests.helpers import WorkerProcess, worker_env

pytestmark = pytest.mark.integration

QUESTION = "How long does it take for a new card to arrive?"


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path / "worker.log")
    # The agent stays off here: its own (cacheable) answers to the probing questions would
    # enter the cache beside the entries these tests seed.
    # The audit stays off too: it re-answers a sampled share of hits through the router, whose
    # tool lookups would add usage records beside the one these tests expect of a hit
    # (tests/e2e/test_cache_audit.py covers the audit).
    process.extra_env = {"TICKETFLOW_AGENT_ENABLED": "false", "TICKETFLOW_CACHE_AUDIT_SHARE": "0"}
    process.start()
    yield process
    assert process.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]


def answer(client: TicketflowClient, tenant: str, text: str, timeout_s: float = 60) -> TicketResolved:
    ticket = TicketSubmitted(ticket_id=f"t-{uuid.uuid4().hex[:12]}", tenant_id=tenant, body=text)
    client.submit([ticket])
    for received in client.results(expect=1, ticket_ids={ticket.ticket_id}, timeout_s=timeout_s):
        resolved: TicketResolved = received.event
        return resolved
    raise AssertionError(f"no response for {ticket.ticket_id} within {timeout_s} s")


def wait_for_path(client: TicketflowClient, tenant: str, text: str, path: str, timeout_s: float = 90) -> TicketResolved:
    """Ask again until the answer comes by ``path``, or (``path="miss"``) by any path but the
    cache (the cache replica applies updates asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resolved = answer(client, tenant, text)
        arrived = resolved.path != "cache" if path == "miss" else resolved.path == path
        if arrived or time.monotonic() > deadline:
            assert arrived, f"still {resolved.path} after {timeout_s} s"
            return resolved
        time.sleep(0.5)


def seed(client: TicketflowClient, tenant: str, expires_in_ms: int = 3_600_000) -> None:
    now = int(time.time() * 1000)
    client.cache_updates([CacheUpdate(tenant_id=tenant, op="upsert", created_at=now, entry_id="seed-1", text=QUESTION,
                                      answer="Cards arrive within 5 working days.", resolution_key="card_arrival",
                                      kb_version="1", expires_at=now + expires_in_ms)])


def test_a_resolved_answer_is_served_again_from_cache_and_only_to_its_tenant(
        settings: Settings, worker: WorkerProcess) -> None:
    client = TicketflowClient(settings)
    now = int(time.time() * 1000)
    agent_answer = TicketResolved(ticket_id="first", tenant_id="acme", answer="Cards arrive within 5 working days.",
                                  path="agent", created_at=now, resolved_at=now, resolution_key="card_arrival",
                                  cacheable=True, cache_text=QUESTION, models=["strong"], tokens_in=900,
                                  cost_micros=4200)
    topic = client.topic("tickets.responses")
    client.send_raw(topic, b"first", client.serde.encode("TicketResolved", to_record(agent_answer), topic))
    client.flush()

    hit = wait_for_path(client, "acme", QUESTION, "cache")
    assert hit.answer == agent_answer.answer and hit.resolution_key == "card_arrival"
    assert hit.cache_similarity is not None and hit.cache_similarity > 0.99
    assert (hit.tokens_in, hit.tokens_out, hit.cost_micros, hit.models, hit.steps) == (0, 0, 0, [], 0)
    assert "cache" in hit.stage_latency_ms
    # no LLM call for a hit: the only usage is the cache stage's own embedding of the question
    usage = client.events("llm.usage", UsageRecord, timeout_s=5)
    assert usage and {(u.kind, u.provider, u.workflow) for u in usage} == {("embedding", "local", "cache")}

    other = answer(client, "globex", QUESTION)
    assert other.path != "cache", "another tenant was served acme's answer"
    # a cache hit is not written back as a new entry
    assert answer(client, "acme", QUESTION).path == "cache"


def test_an_expired_entry_is_a_miss(settings: Settings, worker: WorkerProcess) -> None:
    client = TicketflowClient(settings)
    seed(client, "shortlived", expires_in_ms=20_000)
    first = wait_for_path(client, "shortlived", QUESTION, "cache", timeout_s=15)
    assert first.path == "cache"
    time.sleep(max(0.0, 20.5 - (time.time() * 1000 - first.created_at) / 1000))
    time.sleep(1)
    assert answer(client, "shortlived", QUESTION).path != "cache"


def test_a_new_knowledge_base_version_and_a_purge_invalidate(settings: Settings, worker: WorkerProcess) -> None:
    client = TicketflowClient(settings)
    seed(client, "versioned")
    seed(client, "purged")
    wait_for_path(client, "versioned", QUESTION, "cache")
    wait_for_path(client, "purged", QUESTION, "cache")

    RedisKbVersions(redis_client(settings), settings.redis_key_prefix()).set("versioned", "2")
    time.sleep(1.5)  # workers re-read a tenant's version at most once a second
    assert answer(client, "versioned", QUESTION).path != "cache"

    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "cache", "purge", "--tenant", "purged",
                           "--key", "card_arrival"], env=worker_env(settings), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert wait_for_path(client, "purged", QUESTION, "miss", timeout_s=30).path != "cache"
