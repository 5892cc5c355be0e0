"""A replay's window against the real broker: offsets_for_times per partition, only original
tickets, the tenant filter, and the warning when retention has deleted the window's start."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.client import TicketflowClient
from pipeline.events import TicketSubmitted
from pipeline.replay import window
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


def tickets(name: str, n: int, tenant: str = "acme", tag: str | None = None) -> list[TicketSubmitted]:
    return [TicketSubmitted(ticket_id=f"{name}-{i}", tenant_id=tenant, body=f"where is my card? {name} {i}",
                            replay_tag=tag) for i in range(n)]


def now_ms() -> int:
    return int(time.time() * 1000)


def test_the_window_is_what_arrived_between_since_and_until(settings: Settings) -> None:
    client = TicketflowClient(settings)
    client.submit(tickets("before", 12))
    time.sleep(1.0)
    since = now_ms()
    client.submit(tickets("inside", 12) + tickets("other", 3, tenant="globex") + tickets("again", 4, tag="r1"))
    client.send_raw(client.topic("tickets.ingress"), b"junk", b"\x00not a ticket")
    client.flush()
    time.sleep(1.0)
    until = now_ms()
    time.sleep(0.2)
    client.submit(tickets("after", 12))

    chosen = window.select(client, since, until)
    assert sorted(t.ticket_id for t in chosen.tickets) == sorted(
        [f"inside-{i}" for i in range(12)] + [f"other-{i}" for i in range(3)])
    assert chosen.skipped == {"replayed": 4, "undecodable": 1} and chosen.warnings == []
    acme = window.select(client, since, until, tenant="acme")
    assert {t.tenant_id for t in acme.tickets} == {"acme"} and acme.skipped["other_tenant"] == 3
    everything = window.select(client, since - 60_000, None)
    assert len(everything.tickets) == 12 + 12 + 3 + 12


def test_a_window_partly_deleted_by_retention_says_so(settings: Settings) -> None:
    client = TicketflowClient(settings)
    since = now_ms()
    client.submit(tickets("old", 30))
    time.sleep(1.0)
    client.submit(tickets("new", 30))
    topic = client.topic("tickets.ingress")
    admin = AdminClient(settings.kafka_common())
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    from confluent_kafka import Consumer

    consumer = Consumer({**settings.kafka_common(), "group.id": "test-retention"})
    cut = []
    for p in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > 1:
            cut.append(TopicPartition(topic, p, high - 1))  # as retention would: all but the last record
    consumer.close()
    for future in admin.delete_records(cut).values():
        future.result(30)
    chosen = window.select(client, since, None)
    assert len(chosen.warnings) == len(cut) > 0, chosen.warnings
    assert all("retention has deleted offsets below" in w for w in chosen.warnings)
    assert len(chosen.tickets) <= len(partitions)  # what retention left: at most one record each
