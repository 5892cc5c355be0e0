"""``ticketflow cache calibrate --second-opinion``: the bars for leaning on the router's classifier.

The cache-only bars (:mod:`pipeline.cache.calibrate`) judge a query by the cache's entries
alone. Workers also ask the router's classifier (:class:`pipeline.cache.policy.SecondOpinion`):
a hit on a key it knows needs its linear model to pick that key with ``router_probability``,
and then the cache's own bars relax to the *corroborated* ones. Those four numbers (and the
linear model's regularisation ``C``) are picked here the same way as the cache's: over folds
that keep near-paraphrases together, the classifier fitted on the other folds only (the
examples it would otherwise have seen are the queries' paraphrases), every combination judged
by :func:`pipeline.cache.policy.judge` -- the code workers run -- and the highest hit rate
whose precision's Wilson 95 % lower bound reaches the target wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.cache.audit import wilson
from pipeline.cache.calibrate import PARAPHRASE_SIMILARITY, grouped_folds, paraphrase_groups
from pipeline.cache.embedder import MicroBatcher, encode_all
from pipeline.cache.policy import Evidence, HitPolicy, evidence, exact_neighbours, judge
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact
from pipeline.routing.classifier import IntentClassifier
from pipeline.routing.linear import LinearIntentModel

GRID = {"router_probability": (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95),
        "corroborated_share": (0.6, 0.7, 0.8, 0.9),
        "corroborated_agree": (1, 2, 3),
        "corroborated_margin": (0.0, 0.02, 0.04)}
C_VALUES = (3.0, 10.0, 30.0)


@dataclass(frozen=True)
class OpinionCalibration:
    policy: HitPolicy
    linear_c: float
    hit_rate: float
    precision: float
    precision_low: float
    precision_high: float
    hits: int
    rows: int
    folds: int
    candidates: int
    by_c: dict[float, tuple[float, float]]  # C -> (best admissible hit rate, its precision)
    without: tuple[float, float]  # the base policy's hit rate and precision with the vote alone (no linear model)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "router_linear_c": self.linear_c,
                "hit_rate": round(self.hit_rate, 4), "precision": round(self.precision, 4),
                "precision_ci95": [round(self.precision_low, 4), round(self.precision_high, 4)],
                "hits": self.hits, "rows": self.rows, "folds": self.folds, "candidates": self.candidates,
                "by_linear_c": {str(c): {"hit_rate": round(h, 4), "precision": round(p, 4)}
                                for c, (h, p) in self.by_c.items()},
                "vote_only": {"hit_rate": round(self.without[0], 4), "precision": round(self.without[1], 4)}}


def _score(policy: HitPolicy, found: Sequence[tuple[Evidence | None, str]]) -> tuple[int, int]:
    hit_count = correct = 0
    for seen, label in found:
        verdict = judge(policy, seen)
        if verdict.hit:
            hit_count += 1
            correct += verdict.resolution_key == label
    return hit_count, correct


def calibrate_opinion(batcher: MicroBatcher, rows: Sequence[LabelledQuery], target_precision: float,
                      router_policy: HitPolicy, base: HitPolicy | None = None, folds: int = 5, seed: int = 7,
                      c_values: Sequence[float] = C_VALUES,
                      progress: Callable[[str, int, int], None] | None = None) -> OpinionCalibration:
    base = base or HitPolicy()
    texts = [redact(r.text) for r in rows]
    labels = [r.label for r in rows]
    vectors = encode_all(batcher, texts, progress)
    parts = grouped_folds(paraphrase_groups(vectors, PARAPHRASE_SIMILARITY), folds, seed)
    neighbours: list[list[Any]] = []
    classifiers: list[tuple[list[int], IntentClassifier]] = []
    for part in parts:
        rest = [i for other in parts if other is not part for i in other]
        neighbours.append(exact_neighbours(vectors[part], vectors[rest], [labels[i] for i in rest],
                                           [texts[i] for i in rest], base.k))
        classifiers.append((rest, IntentClassifier([rows[i] for i in rest], vectors[rest], router_policy)))
    vote_only = [(evidence(base, texts[i], n, opinion=op), labels[i])
                 for part, found, (_, classifier) in zip(parts, neighbours, classifiers, strict=True)
                 for i, n, op in zip(part, found, classifier.opinions([texts[i] for i in part], vectors[part]),
                                     strict=True)]
    vote_hits, vote_correct = _score(base, vote_only)
    best: OpinionCalibration | None = None
    by_c: dict[float, tuple[float, float]] = {}
    candidates = 0
    steps = len(c_values) * folds
    for ci, c in enumerate(c_values):
        found: list[tuple[Evidence | None, str]] = []
        for f, (part, near, (rest, classifier)) in enumerate(zip(parts, neighbours, classifiers, strict=True)):
            classifier.linear = LinearIntentModel.fit(vectors[rest], [labels[i] for i in rest], c)
            opinions = classifier.opinions([texts[i] for i in part], vectors[part])
            found.extend((evidence(base, texts[i], n, opinion=op), labels[i])
                         for i, n, op in zip(part, near, opinions, strict=True))
            if progress:
                progress("linear model fits", ci * folds + f + 1, steps)
        best_here = (0.0, 0.0)
        for values in itertools.product(*GRID.values()):
            policy = HitPolicy.from_dict({**base.to_dict(), **dict(zip(GRID, values, strict=True))})
            candidates += 1
            hit_count, correct = _score(policy, found)
            low, high = wilson(correct, hit_count)
            rate = hit_count / len(rows)
            if not hit_count or low < target_precision:
                continue
            if rate > best_here[0]:
                best_here = (rate, correct / hit_count)
            if best is None or rate > best.hit_rate:
                best = OpinionCalibration(policy, c, rate, correct / hit_count, low, high, hit_count, len(rows),
                                          folds, 0, {}, (0.0, 0.0))
        by_c[c] = best_here
    if best is None:
        raise ValueError(f"no second-opinion setting in the grid has a precision whose 95 % lower bound reaches "
                         f"{target_precision} on these {len(rows)} rows")
    without = (vote_hits / len(rows), vote_correct / vote_hits if vote_hits else 1.0)
    return replace(best, candidates=candidates, by_c=by_c, without=without)

