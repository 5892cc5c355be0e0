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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.cache.embedder import Embedder
from pipeline.cache.policy import HitPolicy, Neighbour, SecondOpinion, evidence, exact_neighbours, judge
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact
from pipeline.routing.linear import DEFAULT_C, LinearIntentModel


@dataclass(frozen=True, slots=True)
class IntentDecision:
    intent: str | None  # None: abstain
    reason: str  # "hit" or the policy's miss reason
    similarity: float | None
    nearest: str | None  # the nearest example's intent, also when abstaining
    candidates: tuple[str, ...] = ()  # the intents of the nearest examples, nearest first (a shortlist)


class IntentClassifier:
    def __init__(self, examples: Sequence[LabelledQuery], vectors: npt.NDArray[np.float32],
                 policy: HitPolicy | None = None, shortlist: int = 5,
                 linear: LinearIntentModel | None = None) -> None:
        if len(examples) != len(vectors):
            raise ValueError(f"{len(examples)} examples but {len(vectors)} vectors")
        self.examples = list(examples)
        self.texts = [redact(e.text) for e in examples]
        self.labels = [e.label for e in examples]
        self.vectors = vectors
        self.policy = policy or HitPolicy()
        self.shortlist = shortlist
        self.known = frozenset(self.labels)
        self.linear = linear  # the calibrated confidence the cache's second opinion asks for

    @classmethod
    def fit(cls, embedder: Embedder, examples: Sequence[LabelledQuery], policy: HitPolicy | None = None,
            cache_dir: Path | None = None, shortlist: int = 5, linear_c: float | None = DEFAULT_C) -> IntentClassifier:
        """Embed the examples and fit the linear model on them (or load both from ``cache_dir``,
        keyed by model and examples); ``linear_c=None`` for the nearest-example vote alone."""
        texts = [redact(e.text) for e in examples]
        labels = [e.label for e in examples]
        digest = hashlib.sha256("\x00".join([embedder.name, *texts, *labels]).encode()).hexdigest()[:16]
        path = None if cache_dir is None else cache_dir / f"intent-examples-{digest}.npy"
        if path is not None and path.exists():
            vectors = np.load(path)
        else:
            vectors = embedder.encode(texts)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
                np.save(partial, vectors)
                partial.replace(path)  # workers starting together never read half a file
        model = None
        if linear_c is not None and len(set(labels)) > 1:
            model = LinearIntentModel.fit_cached(vectors, labels, cache_dir, digest, linear_c)
        return cls(examples, vectors, policy, shortlist, model)

    def classify(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]) -> list[IntentDecision]:
        """One decision per text, given its (L2-normalised) embedding."""
        return [decision for decision, _ in self._judged(texts, vectors, with_linear=False)]

    def _judged(self, texts: Sequence[str], vectors: npt.NDArray[np.float32], with_linear: bool = True
                ) -> list[tuple[IntentDecision, SecondOpinion]]:
        if len(texts) == 0:
            return []
        found = exact_neighbours(vectors, self.vectors, self.labels, self.texts, self.policy.k)
        # the router's decision is the vote's; only the cache's second opinion asks the linear model
        likely: list[tuple[str | None, float | None]] = (
            list(self.linear.best(vectors)) if with_linear and self.linear is not None else [(None, None)] * len(texts))
        judged = []
        for text, neighbours, (best, probability) in zip(texts, found, likely, strict=True):
            seen = evidence(self.policy, text, neighbours)
            verdict = judge(self.policy, seen)
            ranked = distinct_intents(neighbours, self.shortlist)
            decision = IntentDecision(verdict.resolution_key if verdict.hit else None, verdict.reason,
                                      verdict.similarity, verdict.resolution_key, ranked)
            opinion = SecondOpinion(decision.intent, ranked, self.known, seen.share if seen else 0.0,
                                    seen.margin if seen else 0.0, best, probability)
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
