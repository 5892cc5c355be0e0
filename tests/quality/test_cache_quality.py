"""The cache's quality claims, on data the defaults were not tuned on.

The defaults came from `cache calibrate` on the tune part of the banking77 train split
(pipeline.datasets.banking77_split), over folds that keep paraphrases together, picked for
the Wilson lower bound of their precision; here the cache is seeded with that tune part and
queried with the held-out part, which calibration never saw.

Issue 11 moved the trade-off: the previous defaults met hit rate >= 0.65 at precision 0.9939
on this split, yet only 0.987 on banking77 queries nobody here had seen; across paraphrase
groups they reach 0.987 [0.983, 0.990]. The re-derived defaults hold 0.993 [0.990, 0.996]
there and give up 2 points of hit rate on this split (README "Semantic cache").
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.cache.embedder import MicroBatcher
from pipeline.cache.evaluation import EvalResult, evaluate
from pipeline.cache.live_eval import LiveResult, LiveSettings, previous_policy, simulate
from pipeline.cache.policy import HitPolicy, judge
from pipeline.datasets import LabelledQuery, banking77_split
from pipeline.pii import redact
from pipeline.routing.factory import build_classifier
from pipeline.settings import Settings

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def holdout(embedder: MicroBatcher) -> EvalResult:
    tune, held = banking77_split()
    return evaluate(embedder.embedder, tune, held, HitPolicy())


def test_defaults_reach_the_precision_and_hit_rate_targets_on_held_out_queries(holdout: EvalResult) -> None:
    scores = holdout.scores
    assert scores.queries == 1998
    assert scores.precision >= 0.99, scores
    assert scores.hit_rate >= 0.62, scores  # was 0.65 before the guarantee-based calibration (docstring)


def test_as_a_worker_judges_with_the_second_opinion_precision_holds_and_out_of_scope_rarely_hits(
        embedder: MicroBatcher, base_settings: Settings) -> None:
    """The production configuration (the router's classifier as the second opinion, on by
    default): issue 11's static target, precision >= 0.99 at hit rate >= 0.65 on queries the
    defaults were not tuned on. Measured 0.9948 at 0.678 with the linear model's confidence
    (0.9954 at 0.539 with the vote's share before it; README "Semantic cache")."""
    classifier = build_classifier(base_settings, embedder)
    tune, held = banking77_split()
    result = evaluate(embedder.embedder, tune, held, HitPolicy(), opinions=classifier)
    assert result.scores.precision >= 0.99, result.scores
    assert result.scores.hit_rate >= 0.65, result.scores
    texts = [t.strip() for t in (DATA / "out_of_scope.txt").read_text().splitlines() if t.strip()]
    outside = evaluate(embedder.embedder, tune, [LabelledQuery(t, "out_of_scope") for t in texts], HitPolicy(),
                       opinions=classifier)
    assert outside.scores.hits <= 1, outside.scores  # the same tripwire as below (1 of 60 measured)


def test_the_single_threshold_baseline_is_worse_on_both_counts(holdout: EvalResult) -> None:
    assert holdout.baseline.precision < holdout.scores.precision
    assert holdout.baseline.hit_rate < holdout.scores.hit_rate / 2


def test_polarity_reversed_queries_never_get_the_reversed_answer(embedder: MicroBatcher) -> None:
    tune, _ = banking77_split()
    with (DATA / "polarity_reversed.csv").open() as handle:
        rows = [LabelledQuery(r["text"], r["reversed_label"]) for r in csv.DictReader(handle)]
    result = evaluate(embedder.embedder, tune, rows, HitPolicy())
    served = [(row.text, v.resolution_key) for row, v in
              zip(rows, (judge(result.policy, e) for e in result.evidence), strict=True)
              if v.hit and v.resolution_key == row.label]
    assert served == []


def test_out_of_scope_questions_rarely_hit(embedder: MicroBatcher) -> None:
    """60 hand-written questions no banking77 intent answers. A tripwire, not the 0.5 % claim:
    60 queries cannot measure a rate that low (README, 'What is not shown')."""
    tune, _ = banking77_split()
    texts = [t.strip() for t in (DATA / "out_of_scope.txt").read_text().splitlines() if t.strip()]
    result = evaluate(embedder.embedder, tune, [LabelledQuery(t, "out_of_scope") for t in texts], HitPolicy())
    assert result.scores.out_of_scope == 60
    assert result.scores.hits <= 1, result.scores
    # The report names every wrong answer it gave (what `cache eval` prints) and bounds the rate.
    report = result.to_dict()
    assert [w["text"] for w in report["false_hit_examples"]] == [
        redact(t) for t, e in zip(texts, result.evidence, strict=True) if judge(result.policy, e).hit]
    assert all(w["out_of_scope"] and w["served"] for w in report["false_hit_examples"])
    low, high = report["out_of_scope_hit_rate_ci95"]
    assert low <= report["out_of_scope_hit_rate"] <= high and high < 0.1


@pytest.fixture(scope="module")
def live_streams(embedder: MicroBatcher, base_settings: Settings) -> dict[str, LiveResult]:
    """The held-out part as a stream from a cold cache that learns from its own answers."""
    classifier = build_classifier(base_settings, embedder)
    _, held = banking77_split()
    orders = {"shuffled": held, "by_label": sorted(held, key=lambda r: r.label)}
    results = {}
    for name, rows in orders.items():
        vectors = embedder.encode_sorted([redact(r.text) for r in rows])
        # a write-back delay of 5 tickets: the pipeline keeping up with the stream
        results[name] = simulate(rows, vectors, classifier, HitPolicy(), LiveSettings(rule_lag=5))
        results[f"{name}_previous"] = simulate(rows, vectors, classifier, previous_policy(HitPolicy()),
                                               LiveSettings(rule_lag=5), use_opinion=False)
    return results


def test_live_learning_keeps_its_precision_shuffled_and_in_topic_bursts(live_streams: dict[str, LiveResult]) -> None:
    for name, floor in (("shuffled", 0.25), ("by_label", 0.15)):
        result = live_streams[name]
        assert result.hits / result.queries >= floor, (name, result.to_dict())
        assert result.correct / result.hits >= 0.99, (name, result.to_dict())
        assert result.sensitive_from_provisional == 0
    # the decision before trust levels and the second opinion fails in bursts: the test has teeth.
    # It would fail the bar above, with at least five times the wrong hits (23 of 477 against 2
    # of 632 with the encoder's batch-independent vectors; 24 of 465 with the batched ones, when
    # this said "below 0.95", which the old decision now passes at 0.952)
    before, now = live_streams["by_label_previous"], live_streams["by_label"]
    assert before.correct / before.hits < 0.99
    assert before.hits - before.correct >= 5 * max(1, now.hits - now.correct), (before.to_dict(), now.to_dict())
