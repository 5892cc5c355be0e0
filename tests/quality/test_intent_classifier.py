"""The router's intent classifier on held-out banking77 queries (examples: the tune part)."""

from __future__ import annotations

from pathlib import Path

from pipeline.cache.embedder import MicroBatcher
from pipeline.datasets import banking77_split
from pipeline.routing.classifier import IntentClassifier


def test_decides_most_held_out_queries_and_is_almost_always_right(embedder: MicroBatcher, tmp_path: Path) -> None:
    tune, held = banking77_split()
    classifier = IntentClassifier.fit(embedder, tune, cache_dir=tmp_path)
    texts = [q.text for q in held]
    decisions = classifier.classify(texts, embedder.encode_sorted(texts))
    decided = [(d.intent, q.label) for d, q in zip(decisions, held, strict=True) if d.intent is not None]
    precision = sum(intent == label for intent, label in decided) / len(decided)
    coverage = len(decided) / len(held)
    assert precision >= 0.98, precision
    assert coverage >= 0.6, coverage
    # abstentions say why, and name the nearest intent for the router's explanation
    abstained = [d for d in decisions if d.intent is None]
    assert abstained and all(d.reason != "hit" and d.nearest for d in abstained)


def test_example_embeddings_are_cached_and_reused(embedder: MicroBatcher, tmp_path: Path) -> None:
    tune, _ = banking77_split()
    first = IntentClassifier.fit(embedder, tune[:200], cache_dir=tmp_path)
    (cached,) = tmp_path.glob("intent-examples-*.npy")
    second = IntentClassifier.fit(embedder, tune[:200], cache_dir=tmp_path)
    assert (first.vectors == second.vectors).all() and cached.exists()
    texts = ["my card still has not arrived"]
    assert first.classify(texts, embedder.encode(texts)) == second.classify(texts, embedder.encode(texts))
