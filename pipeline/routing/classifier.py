"""The router's intent classifier: nearest labelled examples, with an abstain decision.

Deterministic for a given model and example set. The decision is the semantic cache's
(:mod:`pipeline.cache.policy`) over a fixed set of labelled examples instead of cached
answers: the nearest examples must agree on the intent by a similarity-weighted vote, with
a floor, a margin to the next intent and the negation guard; otherwise the classifier
abstains and the router hands the ticket on. It takes the embeddings the cache stage
computed when they come with the ticket, so a ticket is embedded once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.cache.embedder import Embedder
from pipeline.cache.policy import HitPolicy, Neighbour, SecondOpinion, evidence, exact_neighbours, judge
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact


@dataclass(frozen=True, slots=True)
class IntentDecision:
    intent: str | None  # None: abstain
    reason: str  # "hit" or the policy's miss reason
    similarity: float | None
    nearest: str | None  # the nearest example's intent, also when abstaining
    candidates: tuple[str, ...] = ()  # the intents of the nearest examples, nearest first (a shortlist)


class IntentClassifier:
    def __init__(self, examples: Sequence[LabelledQuery], vectors: npt.NDArray[np.float32],
                 policy: HitPolicy | None = None, shortlist: int = 5) -> None:
        if len(examples) != len(vectors):
            raise ValueError(f"{len(examples)} examples but {len(vectors)} vectors")
        self.examples = list(examples)
        self.texts = [redact(e.text) for e in examples]
        self.labels = [e.label for e in examples]
        self.vectors = vectors
        self.policy = policy or HitPolicy()
        self.shortlist = shortlist
        self.known = frozenset(self.labels)

    @classmethod
    def fit(cls, embedder: Embedder, examples: Sequence[LabelledQuery], policy: HitPolicy | None = None,
            cache_dir: Path | None = None, shortlist: int = 5) -> IntentClassifier:
        """Embed the examples (or load them from ``cache_dir``, keyed by model and examples)."""
        texts = [redact(e.text) for e in examples]
        path = None
        if cache_dir is not None:
            digest = hashlib.sha256("\x00".join([embedder.name, *texts]).encode()).hexdigest()[:16]
            path = cache_dir / f"intent-examples-{digest}.npy"
            if path.exists():
                return cls(examples, np.load(path), policy, shortlist)
        vectors = embedder.encode(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        return cls(examples, vectors, policy, shortlist)

    def classify(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]) -> list[IntentDecision]:
        """One decision per text, given its (L2-normalised) embedding."""
        return [decision for decision, _ in self._judged(texts, vectors)]

    def _judged(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]
                ) -> list[tuple[IntentDecision, SecondOpinion]]:
        if len(texts) == 0:
            return []
        found = exact_neighbours(vectors, self.vectors, self.labels, self.texts, self.policy.k)
        judged = []
        for text, neighbours in zip(texts, found, strict=True):
            seen = evidence(self.policy, text, neighbours)
            verdict = judge(self.policy, seen)
            ranked = distinct_intents(neighbours, self.shortlist)
            decision = IntentDecision(verdict.resolution_key if verdict.hit else None, verdict.reason,
                                      verdict.similarity, verdict.resolution_key, ranked)
            opinion = SecondOpinion(decision.intent, ranked, self.known, seen.share if seen else 0.0,
                                    seen.margin if seen else 0.0)
            judged.append((decision, opinion))
        return judged

    def opinions(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]) -> list[SecondOpinion]:
        """The classifier as the semantic cache's second opinion (its open-set check)."""
        return [opinion for _, opinion in self._judged(texts, vectors)]


def distinct_intents(neighbours: Sequence[Neighbour], size: int) -> tuple[str, ...]:
    """The distinct intents of the neighbours, most similar first, at most ``size``: what an
    LLM is asked to choose from instead of every intent (a shorter, better-focused prompt)."""
    found: list[str] = []
    for neighbour in neighbours:
        if neighbour.resolution_key not in found:
            found.append(neighbour.resolution_key)
            if len(found) == size:
                break
    return tuple(found)
