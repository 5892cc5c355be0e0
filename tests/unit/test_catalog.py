from __future__ import annotations

import pytest

from pipeline.serde import SchemaCatalog
from topics.catalog import CATALOG, topic_name

ARCHITECTURE_TOPICS = {
    "tickets.ingress", "tickets.accepted", "tickets.uncached", "agent.steps.interactive",
    "agent.steps.batch", "tools.calls", "tools.results", "llm.usage", "tickets.responses",
    "pipeline.metrics", "tickets.dlq", "tickets.replay.responses",
}
# Topics the issues added beside the architecture's, each documented in the README.
EXTENSIONS = {"cache.updates", "tools.invalidations", "tickets.feedback", "tickets.responses.json"}


def test_catalog_has_every_topic_of_the_architecture_with_a_known_schema() -> None:
    assert {spec.name for spec in CATALOG} == ARCHITECTURE_TOPICS | EXTENSIONS
    schemas = SchemaCatalog.load().by_name
    for spec in CATALOG:
        assert all(name in schemas for name in spec.value_schema.split("|")), spec.name
        assert spec.dlq is None or spec.dlq in ARCHITECTURE_TOPICS


def test_ingress_and_dlq_take_an_oversized_ticket() -> None:
    by_name = {spec.name: spec for spec in CATALOG}
    ingress = int(by_name["tickets.ingress"].configs()["max.message.bytes"])
    dlq = int(by_name["tickets.dlq"].configs()["max.message.bytes"])
    assert ingress > 10 * 1024 * 1024 and dlq > ingress


def test_prefix() -> None:
    assert topic_name("run1.", "tickets.ingress") == "run1.tickets.ingress"
    with pytest.raises(KeyError):
        topic_name("", "tickets.nope")
