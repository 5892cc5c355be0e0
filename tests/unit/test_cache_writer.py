"""What the cache writer stores, and what it must never store."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.cache.semantic_cache import FixedKbVersions
from pipeline.events import CacheUpdate, TicketResolved
from pipeline.processing import Emit
from processors.cache_writer import CacheWriter

ANSWERED = TicketResolved(ticket_id="t1", tenant_id="acme", answer="Cards arrive within 5 working days.",
                          path="agent", created_at=1_000, resolved_at=2_000, resolution_key="card_arrival",
                          cacheable=True, cache_text="When will my card arrive? Mail me at <EMAIL>")


def written(resolved: TicketResolved, never: tuple[str, ...] = ()) -> Emit:
    outcome = CacheWriter(FixedKbVersions({"acme": "7"}), ttl_s=60, never_keys=never).handle(resolved, "o")
    assert isinstance(outcome, Emit)
    return outcome


def test_a_cacheable_agent_answer_becomes_an_entry_with_absolute_expiry() -> None:
    (output,) = written(ANSWERED).outputs
    update = output.event
    assert isinstance(update, CacheUpdate) and output.topic == "cache.updates" and output.key == "acme"
    assert update.op == "upsert" and update.resolution_key == "card_arrival" and update.kb_version == "7"
    assert update.created_at == 2_000 and update.expires_at == 2_000 + 60_000
    assert update.text == "When will my card arrive? Mail me at <EMAIL>"


def test_pii_left_in_the_text_is_redacted_before_storing() -> None:
    leaky = dataclasses.replace(ANSWERED, cache_text="card 4111 1111 1111 1111 lost, call +44 20 7946 0958")
    (output,) = written(leaky).outputs
    assert isinstance(output.event, CacheUpdate)
    assert output.event.text == "card <CARD> lost, call <PHONE>"


@pytest.mark.parametrize(("change", "reason"), [
    ({"path": "tool"}, "path_tool"),
    ({"path": "escalated", "escalation_reason": "no_route"}, "path_escalated"),
    ({"path": "cache"}, "path_cache"),
    ({"cacheable": False}, "not_cacheable"),
    ({"resolution_key": None}, "no_key_or_text"),
    ({"cache_text": None}, "no_key_or_text"),
])
def test_never_stored(change: dict[str, object], reason: str) -> None:
    outcome = written(dataclasses.replace(ANSWERED, **change))  # type: ignore[arg-type]
    assert outcome.outputs == () and outcome.note == f"skipped:{reason}"


def test_never_keys_are_not_stored() -> None:
    outcome = written(ANSWERED, never=("card_arrival",))
    assert outcome.outputs == () and outcome.note == "skipped:never_key"


def test_the_cache_stages_vector_goes_along_only_for_the_very_text_stored() -> None:
    vector = bytes(range(16))
    with_vector = dataclasses.replace(ANSWERED, embedding=vector, embedding_model="m")
    (output,) = written(with_vector).outputs
    assert isinstance(output.event, CacheUpdate)
    assert (output.event.embedding, output.event.embedding_model) == (vector, "m")
    # text that still needed redacting here: the vector was of other text, so it stays behind
    leaky = dataclasses.replace(with_vector, cache_text="card 4111 1111 1111 1111 lost")
    (output,) = written(leaky).outputs
    assert isinstance(output.event, CacheUpdate)
    assert output.event.embedding is None and output.event.embedding_model is None
