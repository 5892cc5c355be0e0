"""The semantic cache with the real model and Qdrant Edge: isolation, lifetime, PII, polarity."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cache.edge_index import EdgeIndex
from pipeline.cache.embedder import MicroBatcher
from pipeline.cache.semantic_cache import FixedKbVersions, SemanticCache
from pipeline.events import CacheUpdate
from tests.fakes import FixedClock

QUESTIONS = {
    "declined_card_payment": ["Why was my card payment declined?", "My card payment was declined.",
                              "The shop declined my card payment, why?"],
    "card_arrival": ["When will my new card arrive?", "How long does it take for my card to arrive?",
                     "I am still waiting for my card to be delivered"],
}


@pytest.fixture
def cache(embedder: MicroBatcher, tmp_path: Path) -> Iterator[SemanticCache]:
    made = SemanticCache(embedder, EdgeIndex(tmp_path / "cache", embedder.dim), FixedClock(1_000_000),
                         kb_versions=FixedKbVersions(), ttl_s=60)
    made.apply([made.entry("acme", f"{key}-{i}", text, f"answer about {key}", key)
                for key, texts in QUESTIONS.items() for i, text in enumerate(texts)])
    yield made
    made.index.close()


def test_a_paraphrase_hits_with_the_right_key(cache: SemanticCache) -> None:
    verdict = cache.lookup("acme", "why did my card payment get declined?")
    assert verdict.hit and verdict.resolution_key == "declined_card_payment"
    assert verdict.answer == "answer about declined_card_payment" and verdict.similarity is not None


def test_the_same_text_from_another_tenant_is_a_miss(cache: SemanticCache) -> None:
    assert cache.lookup("acme", "When will my new card arrive?").hit
    verdict = cache.lookup("globex", "When will my new card arrive?")
    assert not verdict.hit and verdict.reason == "empty"


def test_a_reversed_question_is_not_served_the_reversed_answer(cache: SemanticCache) -> None:
    verdict = cache.lookup("acme", "My card payment was not declined")
    assert not verdict.hit and verdict.reason == "polarity"


def test_expiry_is_absolute_and_a_hit_does_not_extend_it(cache: SemanticCache) -> None:
    clock = cache.clock
    assert isinstance(clock, FixedClock)
    clock.now = 1_000_000 + 59_000
    assert cache.lookup("acme", "When will my new card arrive?").hit  # a hit just before expiry...
    clock.now = 1_000_000 + 60_001
    assert cache.lookup("acme", "When will my new card arrive?").reason == "empty"  # ...did not extend it


def test_a_new_knowledge_base_version_invalidates_the_tenants_entries(cache: SemanticCache) -> None:
    kb = cache.kb_versions
    assert isinstance(kb, FixedKbVersions)
    kb.versions["acme"] = "2"
    assert not cache.lookup("acme", "When will my new card arrive?").hit
    cache.apply([cache.entry("acme", "new", "When will my new card arrive?", "v2 answer", "card_arrival")])
    verdict = cache.lookup("acme", "When will my new card arrive?")
    assert verdict.hit and verdict.answer == "v2 answer"


def test_purge_of_one_key(cache: SemanticCache) -> None:
    clock = cache.clock
    assert isinstance(clock, FixedClock)
    cache.apply([CacheUpdate(tenant_id="acme", op="purge", created_at=clock.now_ms(), resolution_key="card_arrival")])
    assert not cache.lookup("acme", "When will my new card arrive?").hit
    assert cache.lookup("acme", "Why was my card payment declined?").hit


def test_pii_is_redacted_before_it_is_stored(cache: SemanticCache) -> None:
    cache.apply([cache.entry("acme", "pii", "My card 4111 1111 1111 1111 was declined, mail jo@example.com",
                             "answer", "declined_card_payment")])
    found = cache.index.search("acme", cache.embedder.encode(["card declined mail"]), 30, cache.clock.now_ms(), "1")
    texts = [n.text for n in found[0]]
    assert "My card <CARD> was declined, mail <EMAIL>" in texts
    assert not any("4111" in t or "example.com" in t for t in texts)


def test_upkeep_indexes_new_entries_and_drops_expired_ones(cache: SemanticCache) -> None:
    clock = cache.clock
    assert isinstance(clock, FixedClock)
    entries = cache.index.count("acme")
    cache.maintain()  # builds the index of what was written; searches still answer
    assert cache.index.count("acme") == entries and cache.lookup("acme", "When will my new card arrive?").hit
    clock.now = 1_000_000 + 60_001
    cache.maintain()
    assert cache.index.count("acme") == 0


def test_an_upsert_that_brings_its_vector_is_not_encoded_again(cache: SemanticCache) -> None:
    text = "I want to change my PIN"
    vector = cache.embedder.encode([text])[0].astype("<f4").tobytes()
    before = cache.encoded_upserts
    carried = dataclasses.replace(cache.entry("acme", "pin-1", text, "answer about change_pin", "change_pin"),
                                  embedding=vector, embedding_model=cache.embedder.name)
    cache.apply([carried])
    assert cache.encoded_upserts == before  # stored as it came
    verdict = cache.lookup("acme", "I want to change my PIN")
    assert verdict.entry_id == "pin-1" and verdict.similarity is not None and verdict.similarity > 0.999
    # a vector of another model is never mixed in: the text is encoded here
    other = dataclasses.replace(cache.entry("acme", "pin-2", "how do I change my PIN?", "answer", "change_pin"),
                                embedding=vector, embedding_model="another-model")
    cache.apply([other])
    assert cache.encoded_upserts == before + 1
