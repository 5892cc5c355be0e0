"""``ticketflow cache calibrate``: pick hit-policy parameters from labelled data.

K-fold cross-validation over the labelled rows: each fold in turn is the query set and the
other folds are the cache. Neighbours come from an exact cosine search (numpy), the
evidence from :func:`pipeline.cache.policy.evidence` -- the code the cache runs -- and every
threshold combination of the grid is scored on it. The pick is the combination with the
highest hit rate whose pooled precision reaches the target.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.cache.embedder import MicroBatcher
from pipeline.cache.policy import Evidence, HitPolicy, evidence, exact_neighbours
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact

SHAPES = {"k": (10, 20, 30), "temperature": (0.03, 0.05, 0.1), "min_similarity": (0.55, 0.6, 0.65, 0.7)}
THRESHOLDS = {"min_share": (0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
              "margin": (0.0, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1),
              "min_agree": (1, 2, 3, 4)}


@dataclass(frozen=True)
class Columns:
    """The evidence of many queries as arrays, for scoring thresholds in bulk."""

    top: npt.NDArray[np.float64]
    share: npt.NDArray[np.float64]
    agree: npt.NDArray[np.int64]
    margin: npt.NDArray[np.float64]
    contradicted: npt.NDArray[np.bool_]
    correct: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, found: Sequence[Evidence | None], labels: Sequence[str]) -> Columns:
        present = [(e, label) for e, label in zip(found, labels, strict=True) if e is not None]
        return cls(
            top=np.array([e.top.similarity for e, _ in present]), share=np.array([e.share for e, _ in present]),
            agree=np.array([e.agree for e, _ in present], dtype=np.int64),
            margin=np.array([e.margin for e, _ in present]),
            contradicted=np.array([e.contradicted for e, _ in present], dtype=bool),
            correct=np.array([e.top.resolution_key == label for e, label in present], dtype=bool),
        )


def hits(policy: HitPolicy, c: Columns) -> npt.NDArray[np.bool_]:
    """:func:`pipeline.cache.policy.judge`'s hit condition over arrays (a test keeps them equal)."""
    supported = (c.agree >= policy.min_agree) | (c.top >= policy.solo_similarity)
    result = ((c.top >= policy.min_similarity) & (c.share >= policy.min_share) & supported
              & (c.margin >= policy.margin))
    if policy.negation_guard:
        result &= ~c.contradicted
    return np.asarray(result, dtype=bool)


@dataclass(frozen=True)
class Calibration:
    policy: HitPolicy
    hit_rate: float
    precision: float
    fold_precisions: list[float]
    target_precision: float
    rows: int
    folds: int
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "hit_rate": round(self.hit_rate, 4),
                "precision": round(self.precision, 4), "fold_precisions": [round(p, 4) for p in self.fold_precisions],
                "target_precision": self.target_precision, "rows": self.rows, "folds": self.folds,
                "candidates": self.candidates}


def calibrate(batcher: MicroBatcher, rows: Sequence[LabelledQuery], target_precision: float, folds: int = 5,
              seed: int = 7, base: HitPolicy | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> Calibration:
    base = base or HitPolicy()
    texts = [redact(r.text) for r in rows]
    vectors = np.zeros((len(rows), batcher.dim), dtype=np.float32)
    for start in range(0, len(rows), 512):
        vectors[start:start + 512] = batcher.encode_sorted(texts[start:start + 512])
        if progress:
            progress("embed", min(start + 512, len(rows)), len(rows))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    parts = [order[i::folds] for i in range(folds)]
    shapes: list[dict[str, Any]] = [dict(zip(SHAPES, values, strict=True))
                                    for values in itertools.product(*SHAPES.values())]
    columns: dict[int, list[Columns]] = {i: [] for i in range(len(shapes))}
    for f, part in enumerate(parts):
        rest = [i for g, p in enumerate(parts) if g != f for i in p]
        found = exact_neighbours(vectors[part], vectors[rest], [rows[i].label for i in rest],
                                 [texts[i] for i in rest], int(max(SHAPES["k"])))
        labels = [rows[i].label for i in part]
        for s, shape in enumerate(shapes):
            policy = replace(base, **shape)
            columns[s].append(Columns.of([evidence(policy, texts[i], n) for i, n in zip(part, found, strict=True)],
                                         labels))
        if progress:
            progress("folds", f + 1, folds)
    best: Calibration | None = None
    candidates = 0
    for s, shape in enumerate(shapes):
        for values in itertools.product(*THRESHOLDS.values()):
            settings: dict[str, Any] = dict(zip(THRESHOLDS, values, strict=True))
            if settings["min_agree"] > shape["k"]:
                continue
            policy = replace(base, **shape, **settings)
            candidates += 1
            per_fold = [(int(h.sum()), int((h & c.correct).sum()))
                        for c in columns[s] for h in [hits(policy, c)]]
            hit_count = sum(h for h, _ in per_fold)
            correct = sum(c for _, c in per_fold)
            precision = correct / hit_count if hit_count else 1.0
            rate = hit_count / len(rows)
            if precision >= target_precision and (best is None or rate > best.hit_rate):
                best = Calibration(policy, rate, precision, [c / h if h else 1.0 for h, c in per_fold],
                                   target_precision, len(rows), folds, 0)
    if best is None:
        raise ValueError(f"no policy in the grid reaches precision {target_precision} on these rows")
    return replace(best, candidates=candidates)
