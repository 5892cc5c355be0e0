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
  "was declined");
- trust: every entry records where it came from (:class:`Provenance`). Seeds, rules, tools
  and confirmed entries are trusted; an agent's answer is provisional until an audit, a
  support desk's feedback or an operator confirms it. A hit rests on at least one trusted
  entry of its key, or clears the stricter ``provisional_similarity`` bar; a sensitive key
  (lost or stolen card, disputes, refunds, closing an account) is never served from, nor
  supported by, a provisional entry;
- open set (:class:`SecondOpinion`): agreeing neighbours only show that the query's intent
  is the nearest one *the cache holds*. The router's classifier knows every intent from
  labelled examples; a hit whose key contradicts its confident decision, or that its linear
  model does not pick with ``router_probability`` (unless the query repeats an entry), is a
  miss. When it does pick the key, two independent sources agree and the cache's own bars
  relax to the *corroborated* ones.

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
MISS_PROVISIONAL = "provisional"
MISS_ROUTER = "router_contradicts"
MISS_OPEN_SET = "open_set"
HIT = "hit"
REASONS = (HIT, MISS_EMPTY, MISS_FLOOR, MISS_DISAGREE, MISS_MARGIN, MISS_POLARITY, MISS_PROVISIONAL, MISS_ROUTER,
           MISS_OPEN_SET)

#: Answers a wrong key costs most on (the agent's cascade treats them the same way): never
#: served from a provisional entry.
SENSITIVE_KEYS: tuple[str, ...] = ("lost_or_stolen_card", "compromised_card", "card_payment_not_recognised",
                                   "cash_withdrawal_not_recognised", "request_refund", "terminate_account",
                                   "lost_or_stolen_phone", "direct_debit_payment_not_recognised")


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A cached entry near the query, as the vector index returns it."""

    similarity: float
    resolution_key: str
    text: str
    answer: str | None  # None when the index returned the decision fields only
    entry_id: str
    trusted: bool = True  # labelled examples are; cache entries say (see Provenance)


@dataclass(frozen=True, slots=True)
class HitPolicy:
    # Defaults: `ticketflow cache calibrate --labels bench/data/banking77_tune.csv --target-precision 0.99`:
    # 5 folds that keep paraphrases (cosine >= 0.9) together; the Wilson 95 % lower bound of
    # the pooled precision reaches 0.99 (0.9933 [0.990, 0.9955] at hit rate 0.447 across
    # paraphrase groups; 0.9937 at 0.638 on the held-out part, README "Semantic cache").
    k: int = 20
    temperature: float = 0.03
    min_similarity: float = 0.70
    min_share: float = 0.95
    min_agree: int = 3
    margin: float = 0.08
    solo_similarity: float = 0.95
    negation_guard: bool = True
    # A hit that no trusted entry of its key supports (only provisional agent answers) needs
    # its nearest entry at least this similar: a near-paraphrase of an answered question.
    provisional_similarity: float = 0.92
    # The router's classifier as a second opinion (when the cache stage has one): the hit's
    # key must be among the ``router_rank`` nearest distinct intents of its labelled examples
    # (when it knows the key), and must not contradict its confident decision.
    router_rank: int = 1
    # When the classifier abstains (the query is ambiguous, or of an intent it does not know),
    # the nearest entry must be at least this similar: the cache answers only near-paraphrases.
    abstain_similarity: float = 0.90
    # Coverage: the classifier's runner-up intents (up to this rank) must be among the query's
    # neighbours in the cache. When the cache holds none of the intent the classifier puts
    # next, its agreement says nothing: it could not have told the two apart (the open set).
    cover_rank: int = 0
    # The classifier's own evidence for the key must clear these bars, stricter than the
    # router's (its decision is at 0.85 of the vote), unless the query repeats an entry
    # (``solo_similarity``): a question answered before is the same question.
    router_share: float = 0.95
    router_margin: float = 0.0
    # With the classifier's linear model (pipeline.routing.linear): the hit's key must be its
    # most probable intent with at least this probability (it replaces router_share and
    # router_margin, which serve a classifier without one). Picked with the corroborated bars
    # below.
    router_probability: float = 0.90
    # Corroborated: when the classifier decides the hit's key itself (two independent sources
    # agree), the cache's own evidence may clear these lower bars instead of min_share,
    # margin and min_agree (set them to those to switch the relief off). Picked with
    # router_probability by `ticketflow cache calibrate --second-opinion --labels
    # bench/data/banking77_tune.csv --target-precision 0.99`: cross-validated hit rate 0.540 at
    # precision 0.9935 [0.9907, 0.9955] (the vote alone: 0.295), README "Semantic cache".
    corroborated_share: float = 0.60
    corroborated_margin: float = 0.0
    corroborated_agree: int = 1
    sensitive_keys: tuple[str, ...] = SENSITIVE_KEYS

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
        if not 1 <= self.min_agree <= self.k or self.corroborated_agree < 1:
            problems.append("min_agree must lie in [1, k] (corroborated_agree >= 1)")
        if self.margin < 0:
            problems.append("margin must be >= 0")
        if not 0.0 <= self.provisional_similarity <= 1.0:
            problems.append("provisional_similarity must lie in [0, 1]")
        if self.router_rank < 0:
            problems.append("router_rank must be >= 0 (0: no open-set check)")
        if isinstance(self.sensitive_keys, list):  # from JSON
            object.__setattr__(self, "sensitive_keys", tuple(self.sensitive_keys))
        if problems:
            raise ConfigurationError(f"invalid cache hit policy {self}: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["sensitive_keys"] = list(self.sensitive_keys)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HitPolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigurationError(f"unknown cache policy setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


#: How far the audit may tighten a tenant's policy: level 1 and 2 raise the bars, level 3
#: stops serving from the cache (only near-verbatim repeats of trusted entries).
MAX_TIGHTENING = 3


def tightened(policy: HitPolicy, level: int) -> HitPolicy:
    """``policy`` made stricter by the audit's tightening ``level`` (0: unchanged)."""
    if level <= 0:
        return policy
    values = policy.to_dict()
    values.update(min_share=max(policy.min_share, 0.95), margin=policy.margin + 0.03,
                  min_agree=min(policy.k, policy.min_agree + 1), provisional_similarity=1.0,
                  router_rank=1 if policy.router_rank else 0)
    if level >= 2:
        values.update(min_similarity=min(1.0, policy.min_similarity + 0.08), margin=policy.margin + 0.06,
                      min_agree=min(policy.k, policy.min_agree + 2))
    if level >= 3:
        values.update(min_similarity=0.99, solo_similarity=0.99)
    # no relief for corroborated hits once the audit has found the cache wrong
    values.update(corroborated_share=values["min_share"], corroborated_margin=values["margin"],
                  corroborated_agree=values["min_agree"])
    return HitPolicy.from_dict(values)


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
class SecondOpinion:
    """The router's intent classifier on the same query: a judge independent of the cache's
    contents, which knows every intent of its labelled examples (an open-set check)."""

    decided: str | None  # its confident intent (None: it abstained)
    ranked: tuple[str, ...]  # the distinct intents of its nearest examples, nearest first
    known: frozenset[str]  # every intent it has examples of
    share: float = 1.0  # similarity-weighted vote of ``ranked[0]`` among its nearest examples
    margin: float = math.inf  # its nearest example's similarity minus the best of another intent
    # The linear model's most probable intent and its probability (None: the classifier has no
    # linear model, and the vote's share and margin above stand in for a confidence).
    likely: str | None = None
    probability: float | None = None

    def confident(self, key: str, policy: HitPolicy) -> bool:
        """Whether the classifier's own evidence for ``key`` clears the policy's bars: the linear
        model picks it with at least ``router_probability``, or (without a linear model) its
        vote has ``router_share`` and ``router_margin``."""
        if self.probability is not None:
            return self.likely == key and self.probability >= policy.router_probability
        return self.share >= policy.router_share and self.margin >= policy.router_margin

    def corroborates(self, key: str, policy: HitPolicy) -> bool:
        """Whether it independently decides ``key`` (the cache's own bars may then relax)."""
        return (self.confident(key, policy) and not self.contradicts(key, policy)
                and (self.probability is not None or self.decided == key))

    def contradicts(self, key: str, policy: HitPolicy) -> bool:
        """Whether it confidently names another intent than ``key``, a key it knows: of an
        intent it has no examples of (a tenant's own) it cannot tell, and must pick another."""
        if key not in self.known:
            return False
        if self.decided is not None and self.decided != key:
            return True
        return (self.probability is not None and self.likely != key
                and self.probability >= policy.router_probability)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the ``k`` nearest entries say about a query, before the thresholds are applied."""

    top: Neighbour
    share: float  # similarity-weighted vote of the nearest entry's key
    agree: int  # entries of that key above the floor (trusted only, for a sensitive key)
    margin: float  # top similarity minus the best similarity of another key (inf: none)
    contradicted: bool  # the negation guard's finding on those agreeing entries
    considered: int
    trusted_agree: int = 1  # trusted entries among ``agree``
    sensitive: bool = False  # the key is sensitive: provisional entries neither serve nor support it
    opinion: SecondOpinion | None = None
    neighbours: Sequence[Neighbour] = ()  # the ``k`` nearest, for the coverage check


def evidence(policy: HitPolicy, query: str, neighbours: Sequence[Neighbour],
             query_polarity: Polarity | None = None, opinion: SecondOpinion | None = None) -> Evidence | None:
    """The evidence from the ``policy.k`` nearest entries (most similar first); None when empty."""
    near = neighbours[: policy.k]
    if not near:
        return None
    top = near[0]
    key = top.resolution_key
    sensitive = key in policy.sensitive_keys
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
        if sensitive and not n.trusted:
            continue  # a provisional answer is no evidence for a sensitive key (but still a rival's weight)
        same += weight
        if n.similarity >= policy.min_similarity:
            agreeing.append(n)
    contradicted = False
    if policy.negation_guard and agreeing:
        mine = query_polarity or polarity(query)
        contradicted = mine.contradicts([polarity(n.text) for n in agreeing])
    margin = math.inf if best_rival is None else top.similarity - best_rival
    return Evidence(top, same / total, len(agreeing), margin, contradicted, len(near),
                    sum(n.trusted for n in agreeing), sensitive, opinion, near)


def open_set_miss(policy: HitPolicy, key: str, similarity: float, opinion: SecondOpinion | None,
                  neighbours: Sequence[Neighbour] = ()) -> str | None:
    """Why the second opinion rules out a hit on ``key`` (None: it does not)."""
    if opinion is None or policy.router_rank == 0:
        return None
    if opinion.contradicts(key, policy):
        return MISS_ROUTER
    if key in opinion.known and similarity < policy.solo_similarity and not opinion.confident(key, policy):
        return MISS_OPEN_SET  # the classifier is unsure, and the query is no repeat of an entry
    if key in opinion.known and opinion.probability is None and key not in opinion.ranked[: policy.router_rank]:
        return MISS_OPEN_SET
    if (key in opinion.known and opinion.probability is None and opinion.decided is None
            and similarity < policy.abstain_similarity):
        return MISS_OPEN_SET
    if key in opinion.known and policy.cover_rank > 1:
        present = {n.resolution_key for n in neighbours}
        if any(rival not in present for rival in opinion.ranked[: policy.cover_rank] if rival != key):
            return MISS_OPEN_SET
    return None


def judge(policy: HitPolicy, found: Evidence | None) -> Verdict:
    """Apply the policy's thresholds to the evidence."""
    if found is None:
        return Verdict(False, MISS_EMPTY)
    top = found.top

    def miss(reason: str) -> Verdict:
        return Verdict(False, reason, top.similarity, top.resolution_key, neighbours=found.considered)

    if top.similarity < policy.min_similarity:
        return miss(MISS_FLOOR)
    if found.sensitive and not top.trusted:  # never served from a provisional entry
        return miss(MISS_PROVISIONAL)
    corroborated = (found.opinion is not None and policy.router_rank > 0
                    and found.opinion.corroborates(top.resolution_key, policy))
    min_share, margin, min_agree = ((policy.corroborated_share, policy.corroborated_margin, policy.corroborated_agree)
                                    if corroborated else (policy.min_share, policy.margin, policy.min_agree))
    if found.share < min_share or (found.agree < min_agree and top.similarity < policy.solo_similarity):
        return miss(MISS_DISAGREE)
    if found.margin < margin:
        return miss(MISS_MARGIN)
    if policy.negation_guard and found.contradicted:
        return miss(MISS_POLARITY)
    if found.trusted_agree == 0 and top.similarity < policy.provisional_similarity:
        return miss(MISS_PROVISIONAL)
    vetoed = open_set_miss(policy, top.resolution_key, top.similarity, found.opinion, found.neighbours)
    if vetoed is not None:
        return miss(vetoed)
    return Verdict(True, HIT, top.similarity, top.resolution_key, top.answer, found.considered, top.entry_id)


def decide(policy: HitPolicy, query: str, neighbours: Sequence[Neighbour],
           query_polarity: Polarity | None = None, opinion: SecondOpinion | None = None) -> Verdict:
    """The verdict for ``query`` given its nearest entries, most similar first."""
    return judge(policy, evidence(policy, query, neighbours, query_polarity, opinion))


def exact_neighbours(queries: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32], labels: Sequence[str],
                     texts: Sequence[str], k: int) -> list[list[Neighbour]]:
    """The ``k`` nearest of ``vectors`` (L2-normalised) to each query by exact cosine search,
    most similar first; for labelled sets held in memory (calibration, the intent classifier)."""
    sims = queries @ vectors.T
    k = min(k, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    rows = np.arange(sims.shape[0])[:, None]
    order = np.argsort(-sims[rows, top], axis=1)
    ordered = np.take_along_axis(top, order, axis=1)
    scores = sims[rows, ordered].tolist()  # Python floats in one call, not one numpy scalar at a time
    return [[Neighbour(score, labels[j], texts[j], None, str(j)) for score, j in zip(row_scores, row_ids, strict=True)]
            for row_scores, row_ids in zip(scores, ordered.tolist(), strict=True)]
