"""End to end on real Kafka and Redis: worker processes, the client, the egress and the DLQ."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from pipeline.client import TicketflowClient
from pipeline.events import TicketSubmitted, UsageRecord, to_record
from pipeline.llm.tokens import count_tokens
from pipeline.malformed import KINDS, malformed_records
from pipeline.settings import Settings
from processors.cache import cache_text
from tests.helpers import WorkerProcess, dead_letters, response_counts, sample_tickets

pytestmark = pytest.mark.integration

EXPECTED_REASON = {
    "not_avro": "not an Avro record",
    "json_wrong_types": "JSON does not match TicketSubmitted",
    "missing_tenant": "missing required field(s) tenant_id",
    "huge_body": "body is 10485760 bytes, over the limit of 65536",
    "invalid_utf8": "not valid UTF-8",
}


def test_thousand_tickets_all_resolved_once(settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    tickets = sample_tickets(1000, "e2e")
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        client.submit(tickets)
        counts = response_counts(client, {t.ticket_id for t in tickets}, timeout_s=180)
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert len(counts) == 1000, f"lost {1000 - len(counts)}"
    assert set(counts.values()) == {1}, "duplicates on the egress"
    assert dead_letters(client) == []
    # every embedding batch is a usage record: together they count each ticket's text once
    batches = [u for u in client.events("llm.usage", UsageRecord, timeout_s=10) if u.kind == "embedding"]
    assert batches and len({u.record_id for u in batches}) == len(batches)
    assert {(u.tenant_id, u.provider, u.workflow) for u in batches} == {("acme", "local", "cache")}
    assert sum(u.tokens_in for u in batches) == sum(count_tokens(cache_text(t)) for t in tickets)


def test_malformed_records_are_dead_lettered_and_the_stream_keeps_flowing(
        settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    good = sample_tickets(500, "good", seed=3)
    bad = list(malformed_records(50, client.serde, "m", int(time.time() * 1000)))
    stream: list[TicketSubmitted | object] = [*good, *bad]
    random.Random(5).shuffle(stream)
    ingress = client.topic("tickets.ingress")
    for item in stream:
        if isinstance(item, TicketSubmitted):
            ticket = TicketSubmitted(**{**to_record(item), "created_at": int(time.time() * 1000)})
            client.send_raw(ingress, ticket.ticket_id.encode(),
                            client.serde.encode("TicketSubmitted", to_record(ticket)))
        else:
            client.send_raw(ingress, item.key, item.value)  # type: ignore[attr-defined]
    client.flush()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        counts = response_counts(client, {t.ticket_id for t in good}, timeout_s=180)
        letters = dead_letters(client)
    finally:
        worker.stop()
    assert len(counts) == 500 and set(counts.values()) == {1}
    by_key = {letter.key: letter for letter in letters}
    assert len(letters) == 50 and len(by_key) == 50
    for record in bad:
        letter = by_key[record.key]
        assert letter.value == record.value, f"{record.kind}: original bytes not kept"
        assert letter.processor == "intake" and not letter.retryable
        assert letter.source_topic == ingress and letter.source_offset >= 0
        assert EXPECTED_REASON[record.kind] in letter.error_message, (record.kind, letter.error_message)
    assert {r.kind for r in bad} == set(KINDS)


def test_json_tickets_are_accepted_and_duplicates_answered_once(settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    ingress = client.topic("tickets.ingress")
    now = int(time.time() * 1000)
    for i in range(20):
        body = f'{{"ticket_id": "j-{i}", "tenant_id": "acme", "body": "card not working {i}", "created_at": {now}}}'
        client.send_raw(ingress, f"j-{i}".encode(), body.encode())
        client.send_raw(ingress, f"j-{i}".encode(), body.encode())  # the app retried: same id again
    client.flush()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        counts = response_counts(client, {f"j-{i}" for i in range(20)}, timeout_s=120)
    finally:
        worker.stop()
    assert len(counts) == 20 and set(counts.values()) == {1}
