"""``ticketflow cache calibrate``: pick hit-policy parameters from labelled data.

K-fold cross-validation over the labelled rows: each fold in turn is the query set and the
other folds are the cache. Folds keep near-paraphrases together (rows at cosine >= 0.9 of each
other form one group, and a group lies in one fold): a paraphrase on both sides would
flatter the precision, as a repeated question in the tuning data does not repeat in
production. Neighbours come from an exact cosine search (numpy), the evidence from
:func:`pipeline.cache.policy.evidence` -- the code the cache runs -- and every threshold
combination of the grid is scored on it.

The pick is a guarantee, not a point: the combination with the highest hit rate whose
precision's Wilson 95 % lower bound (over every fold's hits pooled) reaches the target. The
report says how many labelled rows that bound needs at the picked precision and hit rate.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.cache.audit import wilson
from pipeline.cache.embedder import MicroBatcher, encode_all
from pipeline.cache.policy import Evidence, HitPolicy, evidence, exact_neighbours
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact

SHAPES = {"k": (10, 20, 30), "temperature": (0.03, 0.05, 0.1),
          "min_similarity": (0.6, 0.65, 0.7, 0.72, 0.75, 0.78)}
#: Rows at least this similar are paraphrases of one question: they stay in one fold.
PARAPHRASE_SIMILARITY = 0.9
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
    precision_low: float = 0.0  # Wilson 95 % lower bound over the pooled hits
    precision_high: float = 1.0
    hits: int = 0
    groups: int = 0  # paraphrase groups the folds were cut along
    # with ``frontier_size``: the admissible policies of highest hit rate, (hit rate, precision, low, policy)
    frontier: list[tuple[float, float, float, HitPolicy]] = field(default_factory=list)

    @property
    def rows_needed(self) -> int | None:
        """Labelled rows for the lower bound to reach the target at this precision and hit rate."""
        return rows_needed(self.precision, self.hit_rate, self.target_precision)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "hit_rate": round(self.hit_rate, 4),
                "precision": round(self.precision, 4),
                "precision_ci95": [round(self.precision_low, 4), round(self.precision_high, 4)],
                "fold_precisions": [round(p, 4) for p in self.fold_precisions],
                "target_precision": self.target_precision, "rows": self.rows, "hits": self.hits,
                "folds": self.folds, "paraphrase_groups": self.groups, "candidates": self.candidates,
                "rows_needed": self.rows_needed}


def rows_needed(precision: float, hit_rate: float, target: float, limit: int = 10_000_000) -> int | None:
    """The fewest labelled rows whose hits (``hit_rate`` of them, ``precision`` right) give a
    Wilson lower bound at or above ``target``; None when no amount of data would."""
    if precision <= target or hit_rate <= 0:
        return None
    hits = 1
    while hits <= limit:
        if wilson(round(precision * hits), hits)[0] >= target:
            return math.ceil(hits / hit_rate)
        hits = max(hits + 1, int(hits * 1.05))
    return None


def paraphrase_groups(vectors: npt.NDArray[np.float32], threshold: float = PARAPHRASE_SIMILARITY,
                      chunk: int = 1024) -> list[int]:
    """A group id per row: rows linked by cosine >= ``threshold`` (transitively) share one."""
    parent = list(range(len(vectors)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(vectors), chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = root(start + r), root(c)
            if a != b:
                parent[a] = b
    return [root(i) for i in range(len(vectors))]


def grouped_folds(groups: Sequence[int], folds: int, seed: int) -> list[list[int]]:
    """Rows dealt into ``folds`` parts, whole groups at a time (largest first, to the smallest part)."""
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    ordered = list(members.values())
    random.Random(seed).shuffle(ordered)
    ordered.sort(key=len, reverse=True)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for rows in ordered:
        min(parts, key=len).extend(rows)
    return parts


def calibrate(batcher: MicroBatcher, rows: Sequence[LabelledQuery], target_precision: float, folds: int = 5,
              seed: int = 7, base: HitPolicy | None = None,
              progress: Callable[[str, int, int], None] | None = None,
              paraphrase_similarity: float = PARAPHRASE_SIMILARITY, frontier_size: int = 0) -> Calibration:
    base = base or HitPolicy()
    texts = [redact(r.text) for r in rows]
    vectors = encode_all(batcher, texts, progress)
    groups = paraphrase_groups(vectors, paraphrase_similarity)
    parts = grouped_folds(groups, folds, seed)
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
    admissible: list[tuple[float, float, float, HitPolicy]] = []
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
            if frontier_size == 0 and best is not None and rate <= best.hit_rate:
                continue
            low, high = wilson(correct, hit_count)
            if hit_count and low >= target_precision:
                admissible.append((rate, precision, low, policy))
                if best is not None and rate <= best.hit_rate:
                    continue
                best = Calibration(policy, rate, precision, [c / h if h else 1.0 for h, c in per_fold],
                                   target_precision, len(rows), folds, 0, low, high, hit_count)
    if best is None:
        raise ValueError(f"no policy in the grid has a precision whose 95 % lower bound reaches "
                         f"{target_precision} on these {len(rows)} rows (more rows, or a lower target)")
    admissible.sort(key=lambda a: -a[0])
    return replace(best, candidates=candidates, groups=len(set(groups)), frontier=admissible[:frontier_size])
