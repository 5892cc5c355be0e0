"""``ticketflow cache eval``: seed a fresh cache with labelled rows, look up labelled queries.

A hit is right when its resolution key equals the query's label; a query whose label is not
among the seed labels has no right answer in the cache, so any hit on it is a false hit.
The same neighbours are judged by the naive baseline (one cosine threshold, 0.95, on the
nearest entry) for comparison. Lookup latency is the index search plus the decision per
query, embedding excluded (embedding is measured by bench/cache_bench.py).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.cache.audit import wilson
from pipeline.cache.edge_index import EdgeIndex
from pipeline.cache.embedder import Embedder, MicroBatcher
from pipeline.cache.index import StoredEntry
from pipeline.cache.policy import Evidence, HitPolicy, Neighbour, Verdict, evidence, judge
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact

if TYPE_CHECKING:
    from pipeline.cache.semantic_cache import SecondOpinions

BASELINE_THRESHOLD = 0.95
EVAL_TENANT = "eval"


@dataclass(frozen=True)
class Scores:
    queries: int
    hits: int
    correct: int
    out_of_scope: int
    out_of_scope_hits: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.hits if self.hits else 1.0

    @property
    def false_hit_rate(self) -> float:
        return (self.hits - self.correct) / self.queries if self.queries else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The rates, and the precision's and the out-of-scope hit rate's 95 % Wilson intervals
        (a rate from one set of queries is an estimate)."""
        return {"hit_rate": round(self.hit_rate, 4), "precision": round(self.precision, 4),
                "precision_ci95": [round(b, 4) for b in wilson(self.correct, self.hits)],
                "false_hit_rate": round(self.false_hit_rate, 4), "hits": self.hits,
                "correct_hits": self.correct, "out_of_scope_queries": self.out_of_scope,
                "out_of_scope_hits": self.out_of_scope_hits,
                "out_of_scope_hit_rate": round(self.out_of_scope_hits / self.out_of_scope, 4)
                if self.out_of_scope else None,
                "out_of_scope_hit_rate_ci95": [round(b, 4) for b in wilson(self.out_of_scope_hits, self.out_of_scope)]
                if self.out_of_scope else None}


def score(decisions: Sequence[tuple[bool, str | None]], labels: Sequence[str], seed_labels: set[str]) -> Scores:
    hits = correct = oos = oos_hits = 0
    for (hit, key), label in zip(decisions, labels, strict=True):
        in_scope = label in seed_labels
        oos += not in_scope
        if hit:
            hits += 1
            correct += key == label
            oos_hits += not in_scope
    return Scores(len(labels), hits, correct, oos, oos_hits)


@dataclass
class EvalResult:
    policy: HitPolicy
    scores: Scores
    baseline: Scores
    reasons: dict[str, int]
    latencies_ms: list[float]
    seed_rows: int
    embedder: str
    evidence: list[Evidence | None] = field(repr=False, default_factory=list)
    neighbours: list[list[Neighbour]] = field(repr=False, default_factory=list)
    labels: list[str] = field(repr=False, default_factory=list)
    seed_labels: set[str] = field(repr=False, default_factory=set)
    texts: list[str] = field(repr=False, default_factory=list)  # the queries, as looked up (redacted)
    verdicts: list[Verdict] = field(repr=False, default_factory=list)  # the policy's, one per query

    def false_hits(self, limit: int = 20) -> list[dict[str, Any]]:
        """The wrong answers the policy served: the query, its label (out of scope when the seed
        has no such key), the key served and the nearest entry's similarity."""
        out: list[dict[str, Any]] = []
        for found, verdict, label, text in zip(self.evidence, self.verdicts, self.labels, self.texts, strict=True):
            if verdict.hit and verdict.resolution_key != label and found is not None:
                out.append({"text": text, "label": label, "out_of_scope": label not in self.seed_labels,
                            "served": verdict.resolution_key, "similarity": round(found.top.similarity, 4)})
                if len(out) == limit:
                    break
        return out

    def to_dict(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "seed_rows": self.seed_rows, "queries": self.scores.queries, **self.scores.to_dict(),
            "false_hit_examples": self.false_hits(),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "miss_reasons": self.reasons, "policy": self.policy.to_dict(), "embedder": self.embedder,
            "baseline": {"threshold": BASELINE_THRESHOLD, **self.baseline.to_dict()},
        }

    def curve(self, setting: str, values: Sequence[float]) -> list[tuple[float, float]]:
        """(hit rate, precision) of the policy as one of its settings varies, the rest unchanged."""
        points = []
        for value in values:
            policy = HitPolicy.from_dict({**self.policy.to_dict(), setting: value})
            decisions = [(v.hit, v.resolution_key) for v in (judge(policy, e) for e in self.evidence)]
            s = score(decisions, self.labels, self.seed_labels)
            points.append((s.hit_rate, s.precision))
        return points

    def baseline_curve(self, thresholds: Sequence[float]) -> list[tuple[float, float]]:
        points = []
        for threshold in thresholds:
            decisions = [_baseline(n, threshold) for n in self.neighbours]
            s = score(decisions, self.labels, self.seed_labels)
            points.append((s.hit_rate, s.precision))
        return points


def _baseline(neighbours: Sequence[Neighbour], threshold: float) -> tuple[bool, str | None]:
    if neighbours and neighbours[0].similarity >= threshold:
        return True, neighbours[0].resolution_key
    return False, None


def evaluate(embedder: Embedder, seed: Sequence[LabelledQuery], queries: Sequence[LabelledQuery], policy: HitPolicy,
             progress: Callable[[str, int, int], None] | None = None, chunk: int = 256,
             opinions: SecondOpinions | None = None) -> EvalResult:
    """Seed a fresh Qdrant Edge shard with ``seed``, then judge every query (with ``opinions``,
    the router's classifier as the second opinion, as a worker's cache stage judges)."""
    batcher = MicroBatcher(embedder)
    try:
        with tempfile.TemporaryDirectory(prefix="ticketflow-cache-eval-") as root:
            index = EdgeIndex(Path(root), embedder.dim)
            far_future = 2**62
            for start in range(0, len(seed), chunk):
                part = seed[start:start + chunk]
                texts = [redact(r.text) for r in part]
                entries = [StoredEntry(f"seed-{start + i}", text, f"answer for {r.label}", r.label, "1", 0, far_future)
                           for i, (text, r) in enumerate(zip(texts, part, strict=True))]
                index.upsert(EVAL_TENANT, entries, batcher.encode_sorted(texts))
                if progress:
                    progress("seed", min(start + chunk, len(seed)), len(seed))
            index.optimize()
            now = int(time.time() * 1000)
            found_all: list[Evidence | None] = []
            verdicts: list[Verdict] = []
            looked_up: list[str] = []
            neighbours_all: list[list[Neighbour]] = []
            latencies: list[float] = []
            for start in range(0, len(queries), chunk):
                part = queries[start:start + chunk]
                texts = [redact(r.text) for r in part]
                looked_up += texts
                vectors = batcher.encode_sorted(texts)
                said = opinions.opinions(texts, vectors) if opinions is not None else [None] * len(texts)
                for text, vector, opinion in zip(texts, vectors, said, strict=True):
                    t0 = time.perf_counter()
                    neighbours = index.search(EVAL_TENANT, vector[None, :], policy.k, now, "1")[0]
                    found = evidence(policy, text, neighbours, opinion=opinion)
                    verdicts.append(judge(policy, found))
                    latencies.append((time.perf_counter() - t0) * 1000)
                    found_all.append(found)
                    neighbours_all.append(neighbours)
                if progress:
                    progress("queries", min(start + chunk, len(queries)), len(queries))
            index.close()
    finally:
        batcher.close()
    seed_labels = {r.label for r in seed}
    labels = [r.label for r in queries]
    return EvalResult(
        policy=policy,
        scores=score([(v.hit, v.resolution_key) for v in verdicts], labels, seed_labels),
        baseline=score([_baseline(n, BASELINE_THRESHOLD) for n in neighbours_all], labels, seed_labels),
        reasons=dict(Counter(v.reason for v in verdicts)),
        latencies_ms=latencies, seed_rows=len(seed), embedder=embedder.name,
        evidence=found_all, neighbours=neighbours_all, labels=labels, seed_labels=seed_labels, texts=looked_up,
        verdicts=verdicts,
    )


def plot(result: EvalResult, path: Path) -> None:
    """Precision against hit rate: the policy (margin varied) and the single threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # with the classifier's linear model the knob that moves the policy is its probability bar;
    # the cache alone moves with its margin
    linear = any(e is not None and e.opinion is not None and e.opinion.probability is not None
                 for e in result.evidence)
    setting, label = ("router_probability", "second opinion's bar 0.5-0.975") if linear else ("margin", "margin 0-0.20")
    values = [0.5 + i / 40 for i in range(0, 20)] if linear else [i / 100 for i in range(0, 21)]
    thresholds = [0.70 + i / 100 for i in range(0, 30)]
    policy_points = result.curve(setting, values)
    base_points = result.baseline_curve(thresholds)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot([p[0] for p in policy_points], [p[1] for p in policy_points], "o-", ms=3,
            label=f"ticketflow policy ({label})")
    ax.plot([p[0] for p in base_points], [p[1] for p in base_points], "s-", ms=3,
            label="single cosine threshold (0.70-0.99)")
    ax.plot([result.scores.hit_rate], [result.scores.precision], "*", ms=14, color="C0", label="policy, defaults")
    ax.plot([result.baseline.hit_rate], [result.baseline.precision], "*", ms=14, color="C1",
            label=f"threshold {BASELINE_THRESHOLD}")
    ax.axhline(0.99, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("hit rate (share of queries answered from cache)")
    ax.set_ylabel("precision (hits with the right resolution key)")
    ax.set_title(f"Semantic cache: {result.seed_rows} seed rows, {result.scores.queries} queries")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
