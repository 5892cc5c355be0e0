"""The cache's secondary measurements quoted in the README, each reproducible here.

1. guard: the 32 polarity-reversed questions (tests/data/polarity_reversed.csv) against the
   banking77 tune part, with and without the negation guard: how many get the reversed answer.
2. out-of-scope: (a) the 60 hand-written questions of tests/data/out_of_scope.txt; (b) a hard
   proxy, 15 banking77 intents (seeded choice) left out of the seed and asked anyway.
3. backends: the held-out evaluation with onnx-int8 and with onnx (float32) embeddings.
4. indexing: single-query search latency in Qdrant Edge before and after the HNSW index is
   built, at 8,005 and 60,000 entries (jittered real vectors).

    PYTHONPATH=. .venv/bin/python bench/cache_probes.py --out bench/results
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.edge_index import EdgeIndex
from pipeline.cache.embedder import MicroBatcher, SentenceTransformerEmbedder
from pipeline.cache.evaluation import evaluate
from pipeline.cache.index import StoredEntry
from pipeline.cache.policy import HitPolicy, judge
from pipeline.datasets import LabelledQuery, banking77_split
from pipeline.demo import percentile
from pipeline.pii import redact
from pipeline.routing.classifier import IntentClassifier
from pipeline.routing.factory import ROUTER_POLICY
from pipeline.settings import load_settings

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def guard(embedder: SentenceTransformerEmbedder, tune: list[LabelledQuery]) -> dict[str, Any]:
    with (DATA / "polarity_reversed.csv").open() as handle:
        rows = [LabelledQuery(r["text"], r["reversed_label"]) for r in csv.DictReader(handle)]
    served = {}
    for on in (True, False):
        policy = HitPolicy(negation_guard=on)
        result = evaluate(embedder, tune, rows, policy)
        served["with_guard" if on else "without_guard"] = sum(
            1 for row, found in zip(rows, result.evidence, strict=True)
            if (v := judge(policy, found)).hit and v.resolution_key == row.label)
    return {"reversed_questions": len(rows), "served_reversed_answer": served}


def out_of_scope(embedder: SentenceTransformerEmbedder, tune: list[LabelledQuery],
                 holdout: list[LabelledQuery], models: Path) -> dict[str, Any]:
    """Hand-written out-of-scope questions, and 15 banking77 intents left out of the seed:
    known to the second opinion (the classifier has examples of every intent: the production
    case for banking77) or unknown to it too (an intent nobody has labelled: the open set proper)."""
    texts = [t.strip() for t in (DATA / "out_of_scope.txt").read_text().splitlines() if t.strip()]
    asked = [LabelledQuery(t, "out_of_scope") for t in texts]
    everyone = IntentClassifier.fit(embedder, tune, ROUTER_POLICY, cache_dir=models)
    labels = sorted({r.label for r in tune})
    left_out = set(random.Random(7).sample(labels, 15))
    seed = [r for r in tune if r.label not in left_out]
    nobody = IntentClassifier.fit(embedder, seed, ROUTER_POLICY, cache_dir=models)
    vote = IntentClassifier(nobody.examples, nobody.vectors, ROUTER_POLICY)
    report: dict[str, Any] = {"hand_written": {}, "left_out_intents": {"intents": 15}}
    # the linear model by itself on the held-out part, at the policy's bar: how often it is that sure, and right
    assert everyone.linear is not None
    bar = HitPolicy().router_probability
    picks = everyone.linear.best(embedder.encode([redact(r.text) for r in holdout]))
    sure = [(intent, row.label) for (intent, p), row in zip(picks, holdout, strict=True) if p >= bar]
    report["linear_alone"] = {"bar": bar, "coverage": round(len(sure) / len(holdout), 4),
                              "precision": round(sum(i == label for i, label in sure) / max(1, len(sure)), 4)}
    say(f"linear model alone: {report['linear_alone']}")
    for name, opinions in (("cache_alone", None), ("second_opinion", everyone)):
        scores = evaluate(embedder, tune, asked, HitPolicy(), opinions=opinions).scores
        report["hand_written"][name] = {"queries": scores.queries, "hits": scores.hits}
    for name, opinions in (("cache_alone", None), ("second_opinion_knows_them", everyone),
                           ("second_opinion_unknown_too", nobody), ("vote_only_unknown_too", vote)):
        proxy = evaluate(embedder, seed, holdout, HitPolicy(), opinions=opinions).scores
        in_scope_hits = proxy.hits - proxy.out_of_scope_hits
        report["left_out_intents"][name] = {
            "queries": proxy.out_of_scope, "out_of_scope_hit_rate": proxy.to_dict()["out_of_scope_hit_rate"],
            "in_scope_hit_rate": round(in_scope_hits / (proxy.queries - proxy.out_of_scope), 4),
            "in_scope_precision": round(proxy.correct / max(1, in_scope_hits), 4)}
        say(f"left out, {name}: {report['left_out_intents'][name]}")
    return report


def backends(settings_dir: Path, tune: list[LabelledQuery], holdout: list[LabelledQuery]) -> dict[str, Any]:
    out = {}
    for backend in ("onnx-int8", "onnx"):
        embedder = SentenceTransformerEmbedder(backend=backend, export_dir=settings_dir / "models")
        scores = evaluate(embedder, tune, holdout, HitPolicy()).scores
        out[backend] = {"hit_rate": round(scores.hit_rate, 4), "precision": round(scores.precision, 4)}
        say(f"backend {backend}: {out[backend]}")
    return out


def indexing(embedder: SentenceTransformerEmbedder, tune: list[LabelledQuery], holdout: list[LabelledQuery],
             sizes: tuple[int, ...]) -> dict[str, Any]:
    batcher = MicroBatcher(embedder)
    base = batcher.encode_sorted([redact(r.text) for r in tune])
    probe = batcher.encode_sorted([redact(r.text) for r in holdout[:300]])
    batcher.close()
    rng = np.random.default_rng(1)
    out = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="cache-probe-") as root:
            index = EdgeIndex(Path(root), base.shape[1])
            for start in range(0, size, 5000):
                rows = np.arange(start, min(start + 5000, size))
                vectors = base[rows % len(tune)] + rng.normal(0, 0.02, (len(rows), base.shape[1])).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                index.upsert("t", [StoredEntry(f"e{i}", tune[i % len(tune)].text, "a", tune[i % len(tune)].label,
                                               "1", 0, 2**62) for i in rows], vectors.astype(np.float32))

            def latency(index: EdgeIndex = index) -> dict[str, float]:
                timings = []
                for vector in probe:
                    t0 = time.perf_counter()
                    index.search("t", vector[None, :], 30, 1, "1")
                    timings.append((time.perf_counter() - t0) * 1000)
                return {"p50_ms": round(percentile(timings, 50), 2), "p99_ms": round(percentile(timings, 99), 2)}

            before = latency()
            started = time.perf_counter()
            index.optimize()
            out[str(size)] = {"unindexed": before, "indexed": latency(),
                              "index_build_s": round(time.perf_counter() - started, 1)}
            index.close()
        say(f"indexing {size}: {out[str(size)]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    settings = load_settings()
    tune, holdout = banking77_split()
    embedder = SentenceTransformerEmbedder(export_dir=settings.state_dir / "models")
    report = {"guard": guard(embedder, tune)}
    say(f"guard: {report['guard']}")
    report["out_of_scope"] = out_of_scope(embedder, tune, holdout, settings.state_dir / "models")
    say(f"out of scope: {report['out_of_scope']}")
    report["backends"] = backends(settings.state_dir, tune, holdout)
    report["indexing"] = indexing(embedder, tune, holdout, (8005, 60_000))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_probes.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
