"""``ticketflow cache eval --live``: the cache as users run it, learning from its own answers.

A cache seeded with true labels (``cache eval``) flatters the hit decision: every intent is
present, every entry is right. In production the cache starts cold and learns from the
pipeline's answers, some wrong, some late; a burst of one new question meets a cache that
holds only other intents. This replays a labelled stream in order through that loop, offline
and deterministically:

- each query is looked up in the tenant's cache as it stands (exact cosine search over the
  entries written so far) with the policy and the router classifier's second opinion;
- a miss is answered as the pipeline would: the router's classifier decides (a rule answer,
  trusted) or abstains (the agent: it understands the classifier's nearest intent with the
  probability ``agent_accuracy``, else another of its shortlist, as the simulated provider
  does; provisional); sensitive keys are never written from the agent;
- an answer becomes an entry after a delay: ``rule_lag`` queries for a rule (the write-back
  hop), ``agent_lag`` for the agent (its seconds of model time at the stream's rate).

Reported: hit rate, precision with its Wilson 95 % interval, wrong hits by source of the
serving entry, and the same stream with the previous decision (no trust levels, no second
opinion) for comparison.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.cache.audit import wilson
from pipeline.cache.embedder import MicroBatcher, encode_all
from pipeline.cache.policy import HitPolicy, Neighbour, decide
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact
from pipeline.routing.classifier import IntentClassifier


@dataclass(frozen=True)
class LiveSettings:
    agent_accuracy: float = 0.85  # the simulated mid tier's (pipeline.llm.simulated)
    rule_lag: int = 20  # ~0.2 s at 100 tickets/s
    agent_lag: int = 250  # ~2.5 s at 100 tickets/s
    seed: int = 7


@dataclass
class LiveResult:
    queries: int
    hits: int
    correct: int
    by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [hits, correct]
    reasons: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)  # source -> entries written
    wrong_entries: int = 0
    sensitive_from_provisional: int = 0
    wrong_examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        low, high = wilson(self.correct, self.hits)
        return {"queries": self.queries, "hits": self.hits,
                "hit_rate": round(self.hits / self.queries, 4) if self.queries else 0.0,
                "precision": round(self.correct / self.hits, 4) if self.hits else 1.0,
                "precision_ci95": [round(low, 4), round(high, 4)],
                "wrong_hits": self.hits - self.correct,
                "by_source": {s: {"hits": h, "precision": round(c / h, 4) if h else 1.0}
                              for s, (h, c) in sorted(self.by_source.items())},
                "miss_reasons": dict(sorted(self.reasons.items())), "entries_written": self.written,
                "wrong_entries": self.wrong_entries, "sensitive_from_provisional": self.sensitive_from_provisional,
                "wrong_examples": self.wrong_examples[:10]}


class _Store:
    """The tenant's cache as an in-memory matrix: exact search, entries appended in order."""

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.texts: list[str] = []
        self.trusted: list[bool] = []
        self.sources: list[str] = []

    def add(self, vector: npt.NDArray[np.float32], key: str, text: str, source: str, trusted: bool) -> None:
        self.vectors = np.vstack([self.vectors, vector[None, :]])
        self.keys.append(key)
        self.texts.append(text)
        self.trusted.append(trusted)
        self.sources.append(source)

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[Neighbour]:
        if not self.keys:
            return []
        sims = self.vectors @ vector
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [Neighbour(float(sims[j]), self.keys[j], self.texts[j], None, str(j), self.trusted[j]) for j in top]


def simulate(queries: Sequence[LabelledQuery], vectors: npt.NDArray[np.float32], classifier: IntentClassifier,
             policy: HitPolicy, live: LiveSettings, use_opinion: bool = True,
             progress: Callable[[str, int, int], None] | None = None) -> LiveResult:
    """One pass over the stream (``vectors``: the queries' embeddings, in order)."""
    texts = [redact(q.text) for q in queries]
    decisions = classifier.classify(texts, vectors)
    opinions = classifier.opinions(texts, vectors)
    rng = random.Random(live.seed)
    store = _Store(vectors.shape[1])
    pending: list[tuple[int, int, str, str, bool]] = []  # (visible at, row, key, source, trusted)
    result = LiveResult(len(queries), 0, 0)
    reasons: Counter[str] = Counter()
    written: Counter[str] = Counter()
    for i, (query, text) in enumerate(zip(queries, texts, strict=True)):
        while pending and pending[0][0] <= i:
            _, row, key, source, trusted = pending.pop(0)
            store.add(vectors[row], key, texts[row], source, trusted)
        neighbours = store.search(vectors[i], policy.k)
        verdict = decide(policy, text, neighbours, opinion=opinions[i] if use_opinion else None)
        reasons[verdict.reason] += 1
        if verdict.hit:
            served = int(verdict.entry_id or 0)
            source = store.sources[served]
            right = verdict.resolution_key == query.label
            result.hits += 1
            result.correct += right
            counts = result.by_source.setdefault(source, [0, 0])
            counts[0] += 1
            counts[1] += right
            if verdict.resolution_key in policy.sensitive_keys and not store.trusted[served]:
                result.sensitive_from_provisional += 1
            if not right:
                result.wrong_examples.append({"query": text, "label": query.label, "served": verdict.resolution_key,
                                              "similarity": round(verdict.similarity or 0.0, 3), "source": source})
        else:
            decision = decisions[i]
            if decision.intent is not None:
                key, source, trusted, lag = decision.intent, "rule", True, live.rule_lag
            else:
                shortlist = list(decision.candidates) or [decision.nearest or query.label]
                understood = rng.random() < live.agent_accuracy
                key = shortlist[0] if understood or len(shortlist) == 1 else rng.choice(shortlist[1:])
                source, trusted, lag = "agent", False, live.agent_lag
            written[source] += 1
            result.wrong_entries += key != query.label
            pending.append((i + lag, i, key, source, trusted))
            pending.sort()
        if progress and (i + 1) % 200 == 0:
            progress("stream", i + 1, len(queries))
    result.reasons = dict(reasons)
    result.written = dict(written)
    return result


def previous_policy(policy: HitPolicy) -> HitPolicy:
    """The decision before trust levels and the second opinion (every entry counted as trusted)."""
    return replace(policy, provisional_similarity=0.0, router_rank=0, sensitive_keys=())


def evaluate_live(batcher: MicroBatcher, queries: Sequence[LabelledQuery], classifier: IntentClassifier,
                  policy: HitPolicy, live: LiveSettings,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    texts = [redact(q.text) for q in queries]
    vectors = encode_all(batcher, texts, progress)
    now = simulate(queries, vectors, classifier, policy, live, progress=progress)
    before = simulate(queries, vectors, classifier, previous_policy(policy), live, use_opinion=False)
    return {**now.to_dict(), "policy": policy.to_dict(), "live": live.__dict__,
            "previous_decision": {k: v for k, v in before.to_dict().items() if k != "wrong_examples"}}
