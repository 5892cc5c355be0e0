"""The hit decision: when may a cached answer be served for a query?

One cosine threshold is not enough (GPTCache's own benchmark: 5.6 % of hits wrong at 0.95;
here a 0.95 threshold is right on 97 % of its hits and answers a quarter of the queries).
A hit needs all of:

- a floor: the nearest entry is at least ``min_similarity`` similar;
- agreement: among the ``k`` nearest entries, those with the nearest entry's resolution key
  hold at least ``min_share`` of the similarity-weighted vote (weights
  ``exp((s - s_top) / temperature)``), and at least ``min_agree`` of them lie above the floor
  -- unless the nearest entry is a near-duplicate (``solo_similarity``), as a repeated ticket is;
- a margin: the nearest entry of any other key is at least ``margin`` less similar;
- the negation guard (:mod:`pipeline.cache.polarity`): the query does not reverse what the
  supporting entries mostly say ("was NOT declined" against entries asking why a payment
  "was declined").

Parameters are per tenant with these defaults (picked by ``ticketflow cache calibrate`` on a
split of the banking77 train set, see the README); miss reasons are stable strings used in
metrics and on ``tickets.uncached``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.cache.polarity import Polarity, polarity
from pipeline.errors import ConfigurationError

MISS_EMPTY = "empty"
MISS_FLOOR = "below_floor"
MISS_DISAGREE = "disagreement"
MISS_MARGIN = "margin"
MISS_POLARITY = "polarity"
HIT = "hit"
REASONS = (HIT, MISS_EMPTY, MISS_FLOOR, MISS_DISAGREE, MISS_MARGIN, MISS_POLARITY)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A cached entry near the query, as the vector index returns it."""

    similarity: float
    resolution_key: str
    text: str
    answer: str | None  # None when the index returned the decision fields only
    entry_id: str


@dataclass(frozen=True, slots=True)
class HitPolicy:
    # Defaults: `ticketflow cache calibrate --labels <banking77 tune split> --target-precision 0.993`
    # (5-fold CV on 8,005 rows of the train split; README "Semantic cache" has the numbers).
    k: int = 30
    temperature: float = 0.05
    min_similarity: float = 0.70
    min_share: float = 0.85
    min_agree: int = 2
    margin: float = 0.03
    solo_similarity: float = 0.95
    negation_guard: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.k < 1:
            problems.append("k must be >= 1")
        if self.temperature <= 0:
            problems.append("temperature must be > 0")
        if not 0.0 <= self.min_similarity <= 1.0 or not 0.0 <= self.solo_similarity <= 1.0:
            problems.append("similarities must lie in [0, 1]")
        if not 0.0 <= self.min_share <= 1.0:
            problems.append("min_share must lie in [0, 1]")
        if not 1 <= self.min_agree <= self.k:
            problems.append("min_agree must lie in [1, k]")
        if self.margin < 0:
            problems.append("margin must be >= 0")
        if problems:
            raise ConfigurationError(f"invalid cache hit policy {self}: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HitPolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigurationError(f"unknown cache policy setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Verdict:
    hit: bool
    reason: str
    similarity: float | None = None
    resolution_key: str | None = None
    answer: str | None = None
    neighbours: int = 0
    entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the ``k`` nearest entries say about a query, before the thresholds are applied."""

    top: Neighbour
    share: float  # similarity-weighted vote of the nearest entry's key
    agree: int  # entries of that key above the floor
    margin: float  # top similarity minus the best similarity of another key (inf: none)
    contradicted: bool  # the negation guard's finding on those agreeing entries
    considered: int


def evidence(policy: HitPolicy, query: str, neighbours: Sequence[Neighbour],
             query_polarity: Polarity | None = None) -> Evidence | None:
    """The evidence from the ``policy.k`` nearest entries (most similar first); None when empty."""
    near = neighbours[: policy.k]
    if not near:
        return None
    top = near[0]
    key = top.resolution_key
    total = same = 0.0
    best_rival = None
    agreeing = []
    for n in near:
        weight = math.exp((n.similarity - top.similarity) / policy.temperature)
        total += weight
        if n.resolution_key != key:
            if best_rival is None:
                best_rival = n.similarity
            continue
        same += weight
        if n.similarity >= policy.min_similarity:
            agreeing.append(n)
    contradicted = False
    if policy.negation_guard and agreeing:
        mine = query_polarity or polarity(query)
        contradicted = mine.contradicts([polarity(n.text) for n in agreeing])
    margin = math.inf if best_rival is None else top.similarity - best_rival
    return Evidence(top, same / total, len(agreeing), margin, contradicted, len(near))


def judge(policy: HitPolicy, found: Evidence | None) -> Verdict:
    """Apply the policy's thresholds to the evidence."""
    if found is None:
        return Verdict(False, MISS_EMPTY)
    top = found.top

    def miss(reason: str) -> Verdict:
        return Verdict(False, reason, top.similarity, top.resolution_key, neighbours=found.considered)

    if top.similarity < policy.min_similarity:
        return miss(MISS_FLOOR)
    if found.share < policy.min_share or (found.agree < policy.min_agree and top.similarity < policy.solo_similarity):
        return miss(MISS_DISAGREE)
    if found.margin < policy.margin:
        return miss(MISS_MARGIN)
    if policy.negation_guard and found.contradicted:
        return miss(MISS_POLARITY)
    return Verdict(True, HIT, top.similarity, top.resolution_key, top.answer, found.considered, top.entry_id)


def decide(policy: HitPolicy, query: str, neighbours: Sequence[Neighbour],
           query_polarity: Polarity | None = None) -> Verdict:
    """The verdict for ``query`` given its nearest entries, most similar first."""
    return judge(policy, evidence(policy, query, neighbours, query_polarity))


def exact_neighbours(queries: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32], labels: Sequence[str],
                     texts: Sequence[str], k: int) -> list[list[Neighbour]]:
    """The ``k`` nearest of ``vectors`` (L2-normalised) to each query by exact cosine search,
    most similar first; for labelled sets held in memory (calibration, the intent classifier)."""
    sims = queries @ vectors.T
    k = min(k, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    found = []
    for row, candidates in enumerate(top):
        ordered = candidates[np.argsort(-sims[row, candidates])]
        found.append([Neighbour(float(sims[row, j]), labels[j], texts[j], None, str(j)) for j in ordered])
    return found
