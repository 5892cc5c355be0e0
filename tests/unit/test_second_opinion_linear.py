"""The router classifier's linear model as the cache's calibrated second opinion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cache.calibrate_opinion import GRID, calibrate_opinion
from pipeline.cache.policy import MISS_OPEN_SET, MISS_ROUTER, HitPolicy, Neighbour, SecondOpinion, decide
from pipeline.datasets import LabelledQuery
from pipeline.routing.classifier import IntentClassifier
from pipeline.routing.factory import ROUTER_POLICY
from pipeline.routing.linear import LinearIntentModel

KNOWN = frozenset({"card_arrival", "card_delivery_estimate", "lost_or_stolen_card"})
INTENTS = ("card_arrival", "card_delivery_estimate", "lost_or_stolen_card", "activate_my_card")


def clusters(per_intent: int = 60, dim: int = 24, spread: float = 0.35, seed: int = 3
             ) -> tuple[np.ndarray, list[str]]:
    """Labelled unit vectors around one centre per intent (two centres close to each other)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(INTENTS), dim))
    centres[1] = centres[0] + 0.6 * rng.normal(size=dim)  # a confusable pair, as in banking77
    rows, labels = [], []
    for i, intent in enumerate(INTENTS):
        points = centres[i] + spread * np.linalg.norm(centres[i]) / np.sqrt(dim) * rng.normal(size=(per_intent, dim))
        rows.append(points)
        labels += [intent] * per_intent
    vectors = np.vstack(rows).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def test_the_linear_model_ranks_and_round_trips(tmp_path: Path) -> None:
    vectors, labels = clusters()
    model = LinearIntentModel.fit(vectors, labels, c=10.0)
    probs = model.probabilities(vectors)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    best = model.best(vectors)
    accuracy = np.mean([intent == label for (intent, _), label in zip(best, labels, strict=True)])
    assert accuracy > 0.9
    assert model.best(vectors[:0]) == []
    path = tmp_path / "m.npz"
    model.save(path)
    again = LinearIntentModel.load(path)
    assert again.classes == model.classes and np.allclose(again.probabilities(vectors), probs)


def test_a_fitted_model_is_cached_by_examples_and_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, labels = clusters()
    first = LinearIntentModel.fit_cached(vectors, labels, tmp_path, "examples-a", 10.0)

    def refit(*args: object, **kwargs: object) -> LinearIntentModel:
        raise AssertionError("fitted again instead of loading")

    monkeypatch.setattr(LinearIntentModel, "fit", classmethod(refit))
    second = LinearIntentModel.fit_cached(vectors, labels, tmp_path, "examples-a", 10.0)
    assert np.allclose(first.weights, second.weights)
    with pytest.raises(AssertionError):  # another C is another model
        LinearIntentModel.fit_cached(vectors, labels, tmp_path, "examples-a", 3.0)


def test_the_classifier_gives_the_linear_models_pick_as_its_opinion() -> None:
    vectors, labels = clusters()
    examples = [LabelledQuery(f"q{i}", label) for i, label in enumerate(labels)]
    with_model = IntentClassifier(examples, vectors, ROUTER_POLICY, linear=LinearIntentModel.fit(vectors, labels))
    opinion = with_model.opinions(["q"], vectors[-1:])[0]
    assert opinion.likely == labels[-1] and opinion.probability is not None and opinion.probability > 0.5
    vote_only = IntentClassifier(examples, vectors, ROUTER_POLICY).opinions(["q"], vectors[-1:])[0]
    assert vote_only.probability is None and vote_only.likely is None


def weakly_agreeing(key: str, top: float = 0.85) -> list[Neighbour]:
    # three of the key, two of another close behind: a share near 0.7 and no margin to speak of
    near = [(top, key), (top - 0.002, "card_delivery_estimate"), (top - 0.004, key), (top - 0.006, key),
            (top - 0.008, "card_delivery_estimate")]
    return [Neighbour(s, k, "some question", f"answer for {k}", f"{k}-{s}") for s, k in near]


def test_a_confident_linear_pick_corroborates_and_relaxes_the_caches_bars() -> None:
    policy = HitPolicy()
    entries = weakly_agreeing("card_arrival")
    assert not decide(policy, "q", entries).hit  # the cache alone: not unanimous enough
    sure = SecondOpinion(None, ("card_arrival",), KNOWN, share=0.7, margin=0.0, likely="card_arrival",
                         probability=policy.router_probability)
    assert decide(policy, "q", entries, opinion=sure).hit  # two independent sources agree


def test_an_unsure_or_contrary_linear_model_vetoes_unless_the_query_repeats_an_entry() -> None:
    policy = HitPolicy()
    entries = [Neighbour(0.88 - i * 0.005, "card_arrival", "q", "a", f"e{i}") for i in range(6)]
    unsure = SecondOpinion("card_arrival", ("card_arrival",), KNOWN, share=1.0, margin=0.2, likely="card_arrival",
                           probability=policy.router_probability - 0.1)
    # the vote alone would have been confident; the calibrated probability is what counts
    assert decide(policy, "q", entries, opinion=unsure).reason == MISS_OPEN_SET
    contrary = SecondOpinion(None, ("card_arrival",), KNOWN, likely="card_delivery_estimate", probability=0.97)
    assert decide(policy, "q", entries, opinion=contrary).reason == MISS_ROUTER
    repeat = [Neighbour(0.97, "card_arrival", "q", "a", "r"), *entries]
    assert decide(policy, "q", repeat, opinion=unsure).hit  # a question answered before
    assert decide(policy, "q", repeat, opinion=contrary).reason == MISS_ROUTER
    # a tenant's own key, which the classifier has never seen: the cache alone judges
    own = [Neighbour(0.88 - i * 0.005, "acme_returns", "q", "a", f"o{i}") for i in range(6)]
    for probability in (0.5, 0.99):  # it must pick one of the intents it knows, however sure
        assert decide(policy, "q", own, opinion=SecondOpinion("card_arrival", ("card_arrival",), KNOWN,
                                                              likely="card_arrival", probability=probability)).hit


class VectorTable:
    """A stand-in encoder: each text names its row in a fixed table (no model load)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.dim = vectors.shape[1]

    def encode_sorted(self, texts: list[str]) -> np.ndarray:
        return self.vectors[[int(t) for t in texts]]


def test_calibration_picks_an_admissible_setting_from_the_grid() -> None:
    vectors, labels = clusters(per_intent=150, spread=0.5)
    rows = [LabelledQuery(str(i), label) for i, label in enumerate(labels)]
    table = VectorTable(vectors)
    result = calibrate_opinion(table, rows, 0.9, ROUTER_POLICY, folds=3, c_values=(1.0, 10.0))  # type: ignore[arg-type]
    assert result.precision_low >= 0.9 and result.hits > 0
    assert result.policy.router_probability in GRID["router_probability"]
    assert result.linear_c in (1.0, 10.0) and set(result.by_c) == {1.0, 10.0}
    assert result.hit_rate == max(rate for rate, _ in result.by_c.values())
    with pytest.raises(ValueError):
        calibrate_opinion(table, rows, 1.0, ROUTER_POLICY, folds=3, c_values=(1.0,))  # type: ignore[arg-type]


def test_cache_eval_gives_the_classifier_the_seed_when_it_does_not_know_the_seeds_intents() -> None:
    from pipeline.cli.cache_cmd import _opinion_examples

    banking = {f"intent_{i}" for i in range(77)}
    assert _opinion_examples("auto", set(list(banking)[:70]), banking) == "configured"
    assert _opinion_examples("auto", {"weather", "alarm", *list(banking)[:5]}, banking) == "seed"
    assert _opinion_examples("configured", {"weather"}, banking) == "configured"
