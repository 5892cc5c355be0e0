"""A linear intent model over the embeddings: the semantic cache's calibrated second opinion.

The router's nearest-example vote (:mod:`pipeline.routing.classifier`) is a good *decision*
(it abstains unless its neighbours agree) but a poor *confidence*: its vote share is 1.0 for
most queries, right or wrong, so the cache could only lean on it with a bar (0.95) that
also turned away a sixth of the right hits. A multinomial logistic regression trained on the
same labelled examples gives a probability per intent that ranks right from wrong answers
far better (by itself, on banking77's held-out part: ``linear_alone`` in
bench/results/cache_probes.json), and
the cache asks it one question: is the hit's key this model's own pick, with at least
``router_probability``? The threshold is calibrated with the cache's other bars over
paraphrase-grouped folds (``ticketflow cache calibrate --second-opinion``).

Fitted with scikit-learn (L-BFGS, seconds for 8,000 examples of 77 intents, cached on
disk next to the examples' vectors); inference is one matrix product in numpy.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: Inverse regularisation strength (the setting TICKETFLOW_ROUTER_LINEAR_C): 30 was picked by
#: ``cache calibrate --second-opinion`` over paraphrase-grouped folds of banking77's tune part
#: (hit rate 0.540 at the guaranteed precision; 10: 0.521, 3: 0.443; README "Semantic cache").
DEFAULT_C = 30.0


class LinearIntentModel:
    """Softmax regression: ``probabilities = softmax(vectors @ weights.T + bias)``."""

    def __init__(self, classes: Sequence[str], weights: npt.NDArray[np.float32],
                 bias: npt.NDArray[np.float32]) -> None:
        if weights.shape[0] != len(classes) or bias.shape[0] != len(classes):
            raise ValueError(f"{len(classes)} classes but weights of shape {weights.shape}")
        self.classes = list(classes)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)

    @classmethod
    def fit(cls, vectors: npt.NDArray[np.float32], labels: Sequence[str], c: float = DEFAULT_C) -> LinearIntentModel:
        from sklearn.linear_model import LogisticRegression

        if len(set(labels)) < 2:
            raise ValueError("a linear intent model needs examples of at least two intents")
        model = LogisticRegression(C=c, max_iter=2000).fit(vectors, list(labels))
        return cls([str(label) for label in model.classes_], model.coef_.astype(np.float32),
                   model.intercept_.astype(np.float32))

    @classmethod
    def fit_cached(cls, vectors: npt.NDArray[np.float32], labels: Sequence[str], cache_dir: Path | None,
                   key: str, c: float = DEFAULT_C) -> LinearIntentModel:
        """Fit, or load the model fitted before for the same examples (``key``) and ``c``."""
        if cache_dir is None:
            return cls.fit(vectors, labels, c)
        digest = hashlib.sha256(f"{key}\x00{c}".encode()).hexdigest()[:16]
        path = cache_dir / f"intent-linear-{digest}.npz"
        if path.exists():
            return cls.load(path)
        model = cls.fit(vectors, labels, c)
        model.save(path)
        return model

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.partial.npz")
        np.savez(partial, classes=np.array(self.classes), weights=self.weights, bias=self.bias)
        partial.replace(path)  # a worker starting beside another never reads half a file

    @classmethod
    def load(cls, path: Path) -> LinearIntentModel:
        with np.load(path) as saved:
            return cls([str(c) for c in saved["classes"]], saved["weights"], saved["bias"])

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def best(self, vectors: npt.NDArray[np.float32]) -> list[tuple[str, float]]:
        """Each vector's most probable intent and its probability."""
        if len(vectors) == 0:
            return []
        probs = self.probabilities(vectors)
        index = probs.argmax(axis=1)
        return [(self.classes[i], float(p))
                for i, p in zip(index.tolist(), probs[np.arange(len(index)), index].tolist(), strict=True)]
