"""Local services answer; the topic catalog is applied and drift is reported (real Kafka)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline import services
from pipeline.admin import apply_topics, delete_topics
from pipeline.settings import Settings
from topics.catalog import CATALOG

pytestmark = pytest.mark.integration


def test_services_are_running(live_services: Settings) -> None:
    report = {s.name: s for s in services.status(live_services)}
    assert report["kafka"].running and report["redis"].running
    # `up` again is a no-op that still reports both running.
    assert all(s.running for s in services.up(live_services, adopt=True))


def test_apply_creates_then_reports_ok_and_drift(live_services: Settings) -> None:
    settings = live_services.model_copy(update={"topic_prefix": f"apply-{uuid.uuid4().hex[:8]}."})
    admin = AdminClient(settings.kafka_common())
    drifted = f"{settings.topic_prefix}tickets.accepted"
    admin.create_topics([NewTopic(drifted, 2, 1)])[drifted].result(30)

    first = {r.topic: r for r in apply_topics(settings)}
    assert len(first) == len(CATALOG)
    assert first[drifted].action == "drift"
    assert any("partitions 2" in d for d in first[drifted].drift)
    assert {r.action for t, r in first.items() if t != drifted} == {"created"}

    again = {r.topic: r.action for r in apply_topics(settings)}
    assert again[drifted] == "drift"
    assert {a for t, a in again.items() if t != drifted} == {"ok"}
    ingress = f"{settings.topic_prefix}tickets.ingress"
    metadata = admin.list_topics(ingress, timeout=10)
    assert len(metadata.topics[ingress].partitions) == settings.topic_partitions
    assert len(delete_topics(settings)) == len(CATALOG)
