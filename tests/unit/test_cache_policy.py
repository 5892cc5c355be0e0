"""The hit decision, the negation guard, and calibrate's bulk scoring against the real judge."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from pipeline.cache.calibrate import Columns, hits
from pipeline.cache.polarity import polarity
from pipeline.cache.policy import (
    MISS_DISAGREE,
    MISS_EMPTY,
    MISS_FLOOR,
    MISS_MARGIN,
    MISS_POLARITY,
    Evidence,
    HitPolicy,
    Neighbour,
    decide,
    judge,
)
from pipeline.errors import ConfigurationError

DATA = Path(__file__).resolve().parent.parent / "data"


def n(similarity: float, key: str, text: str = "some question") -> Neighbour:
    return Neighbour(similarity, key, text, f"answer for {key}", f"{key}-{similarity}")


def test_empty_cache_is_a_miss() -> None:
    assert decide(HitPolicy(), "anything", []).reason == MISS_EMPTY


def test_a_repeated_question_hits_on_its_single_entry() -> None:
    verdict = decide(HitPolicy(), "where is my card", [n(0.999, "card_arrival", "where is my card")])
    assert verdict.hit and verdict.resolution_key == "card_arrival" and verdict.answer == "answer for card_arrival"


def test_one_similar_but_not_duplicate_entry_is_not_enough() -> None:
    # 0.9 is above the floor but a single neighbour is no agreement, and not a near-duplicate
    verdict = decide(HitPolicy(), "q", [n(0.90, "card_arrival")])
    assert not verdict.hit and verdict.reason == MISS_DISAGREE


def test_floor() -> None:
    verdict = decide(HitPolicy(), "q", [n(0.5, "a"), n(0.49, "a"), n(0.48, "a")])
    assert verdict.reason == MISS_FLOOR and verdict.similarity == 0.5


def test_neighbours_must_agree_on_the_key() -> None:
    mixed = [n(0.90, "a"), n(0.89, "b"), n(0.88, "a"), n(0.88, "b"), n(0.87, "b")]
    assert decide(HitPolicy(margin=0), "q", mixed).reason == MISS_DISAGREE


def test_margin_to_the_best_other_key() -> None:
    policy = HitPolicy(min_share=0.85, margin=0.03)
    close = [n(0.90, "a")] * 8 + [n(0.885, "b")]
    assert decide(policy, "q", close).reason == MISS_MARGIN
    clear = [n(0.90, "a")] * 8 + [n(0.80, "b")]
    assert decide(policy, "q", clear).hit
    assert decide(HitPolicy(), "q", [n(0.90, "a")] * 8 + [n(0.75, "b")]).hit


def test_negation_guard_rejects_a_reversed_question() -> None:
    entries = [n(0.93, "declined_card_payment", "Why was my card payment declined?"),
               n(0.92, "declined_card_payment", "My card payment was declined."),
               n(0.90, "declined_card_payment", "The shop declined my card payment")]
    verdict = decide(HitPolicy(), "My card payment was not declined", entries)
    assert not verdict.hit and verdict.reason == MISS_POLARITY
    assert decide(HitPolicy(), "My card payment got declined", entries).hit
    assert decide(HitPolicy(negation_guard=False), "My card payment was not declined", entries).hit


def test_negation_that_the_entries_share_is_not_a_reversal() -> None:
    entries = [n(0.93, "card_not_working", "My card isn't working"),
               n(0.92, "card_not_working", "my card does not work any more"),
               n(0.91, "card_not_working", "why won't my card work")]
    assert decide(HitPolicy(), "My card is not working", entries).hit
    assert decide(HitPolicy(), "My card is working fine", entries).reason == MISS_POLARITY


@pytest.mark.parametrize(("text", "negated"), [
    ("My card payment wasn't declined", {"declin"}),
    ("I can't get my virtual card to work", {"get", "work"}),
    ("Why hasn't my balance updated?", {"updat"}),
    ("The exchange rate is wrong", {"correct"}),
    ("My refund is not missing", set()),
    ("My transfer did not fail", {"fail"}),
    ("My card no longer works", {"work"}),
    ("I made a payment without my card", {"card"}),
    ("I never received my card", {"receiv"}),
    ("I was charged but I did not make this payment", {"mak"}),  # "but" opens a new scope
])
def test_polarity_scope(text: str, negated: set[str]) -> None:
    assert polarity(text).negated == negated


def test_invalid_policy_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="min_agree"):
        HitPolicy(k=5, min_agree=6)
    with pytest.raises(ConfigurationError, match="unknown cache policy setting"):
        HitPolicy.from_dict({"treshold": 0.9})


def test_reversed_queries_file_is_well_formed() -> None:
    with (DATA / "polarity_reversed.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 30 and all(r["text"] and r["reversed_label"] for r in rows)


def test_calibrate_scores_thresholds_exactly_as_judge_does() -> None:
    rng = random.Random(3)
    found: list[Evidence | None] = []
    labels = []
    for _ in range(3000):
        top = n(rng.uniform(0.4, 1.0), rng.choice("ab"))
        found.append(Evidence(top, rng.random(), rng.randint(0, 6), rng.choice([0.0, 0.01, 0.05, 0.2, float("inf")]),
                              rng.random() < 0.1, 10))
        labels.append(rng.choice("ab"))
    columns = Columns.of(found, labels)
    for policy in (HitPolicy(), HitPolicy(min_similarity=0.5, min_share=0.6, min_agree=1, margin=0.0),
                   HitPolicy(negation_guard=False, solo_similarity=0.9)):
        expected = [judge(policy, e).hit for e in found]
        assert hits(policy, columns).tolist() == expected
