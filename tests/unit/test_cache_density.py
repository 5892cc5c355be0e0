"""The folds, subsamples and tallies behind bench/cache_density.py's curve (issue 11's 150-intent
check): each row is asked exactly once, every intent is spread over the folds, a seed never
holds more than N rows of an intent, and the reported rates and intervals are the counts'."""

from __future__ import annotations

import random
from collections import Counter

from bench.cache_density import Tally, stratified_folds, subsample
from pipeline.cache.audit import wilson
from pipeline.datasets import LabelledQuery


def rows(per_intent: dict[str, int]) -> list[LabelledQuery]:
    return [LabelledQuery(f"{label} question {i}", label) for label, n in per_intent.items() for i in range(n)]


def test_folds_partition_the_rows_and_spread_each_intent() -> None:
    data = rows({"a": 30, "b": 17, "c": 5})
    folds = stratified_folds(data, 5, random.Random(1))
    asked = [r for fold in folds for r in fold]
    assert sorted(r.text for r in asked) == sorted(r.text for r in data)  # each row once
    for label, total in (("a", 30), ("b", 17), ("c", 5)):
        sizes = [sum(r.label == label for r in fold) for fold in folds]
        assert sum(sizes) == total
        assert max(sizes) - min(sizes) <= 1  # dealt round-robin


def test_subsample_caps_each_intent_and_zero_keeps_everything() -> None:
    data = rows({"a": 30, "b": 7})
    capped = Counter(r.label for r in subsample(data, 10, random.Random(2)))
    assert capped == {"a": 10, "b": 7}
    assert len(subsample(data, 0, random.Random(2))) == 37
    picked = {r.text for r in subsample(data, 10, random.Random(2))}
    assert picked <= {r.text for r in data}


def test_tally_counts_in_scope_and_out_of_scope_apart() -> None:
    tally = Tally()
    x = {"text": "x", "label": "oos", "out_of_scope": True, "served": "a", "similarity": 0.8}
    weather = {"text": "give me the forecast", "label": "oos", "out_of_scope": True, "served": "weather",
               "similarity": 0.9}
    wrong_key = {"text": "y", "label": "b", "out_of_scope": False, "served": "a", "similarity": 0.8}
    # fold 1: 100 queries of which 20 out of scope; 50 hits, 2 of them on out-of-scope queries
    tally.add({"queries": 100, "hits": 50, "correct_hits": 47, "out_of_scope_queries": 20,
               "out_of_scope_hits": 2}, [x, weather, wrong_key])
    # fold 2: the same out-of-scope query answered again (its cache seeded differently)
    tally.add({"queries": 100, "hits": 41, "correct_hits": 40, "out_of_scope_queries": 20,
               "out_of_scope_hits": 1}, [weather])
    row = tally.row(24, 3600.0)
    assert row["in_scope_queries"] == 160 and row["in_scope_hits"] == 88
    assert row["in_scope_hit_rate"] == round(88 / 160, 4)
    # precision over every answer served, the out-of-scope hits as wrong answers, each
    # out-of-scope query counted once: 3 hits over the 2 caches it was asked of, 2 (1.5 rounded)
    assert row["precision"] == round(87 / 90, 4)
    assert row["precision_ci95"] == [round(v, 4) for v in wilson(87, 90)]
    assert row["in_scope_precision"] == round(87 / 88, 4)
    assert row["out_of_scope_queries"] == 40 and row["out_of_scope_hits"] == 3
    assert row["out_of_scope_ci95"] == [round(v, 4) for v in wilson(3, 40)]
    assert row["wrong_answers"] == [x, weather, wrong_key, weather]
    # the out-of-scope questions that slipped through, each once however many caches answered it
    assert row["out_of_scope_distinct_answered"] == ["give me the forecast", "x"]
