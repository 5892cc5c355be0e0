"""Cache hit rate and precision against the labelled examples a tenant has per intent.

How many labelled examples per intent does a tenant need before the cache answers half of its
questions? This bench answers it for any labelled set, with the worker's defaults (the policy
file's default policy, the router's classifier as second opinion, trained on the seed only, as
``cache eval --opinion-examples seed`` does). The labelled rows are split into ``--folds``
stratified folds; each fold is asked of a cache seeded with at most N rows per intent of the
other folds, for every N of ``--per-intent``. Out-of-scope queries (``--oos``) are asked of the
first fold's seed at each N, or of every fold's seed with ``--oos-every-fold`` (five caches seeded
differently: a tighter estimate of the out-of-scope rate, though not five independent trials;
precision counts each out-of-scope query once, its answers averaged over the caches asked).
``--reference SEED QUERIES`` adds a second labelled set's curve (seeds subsampled to the same N,
asked its own held-out queries) for comparison.

Issue 11's 150-intent check on the data available here (about 67 of CLINC150's in-scope
queries per intent and its 1,000 ``oos_test`` queries, all kept outside the repository;
banking77 as the reference):

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/cache_density.py \\
        --labelled /tmp/clinc/clinc_test_inscope.csv /tmp/clinc/clinc_dev_inscope.csv \\
        /tmp/clinc/clinc_train_part.csv /tmp/clinc/clinc_train_more.csv \\
        --oos /tmp/clinc/oos_test.csv --oos-every-fold --per-intent 15,24,30,36,45,0 \\
        --reference bench/data/banking77_tune.csv bench/data/banking77_holdout.csv \\
        --reference-per-intent 8,15,24,30,45,60,0 --out bench/results/cache_density.json \\
        --plot bench/results/cache_density.png

``0`` in a list means every row (no subsampling). Prints a table and writes JSON (and a PNG).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.cache.audit import wilson
from pipeline.cache.evaluation import evaluate
from pipeline.cache.factory import build_embedder
from pipeline.cache.labelled import read_labelled
from pipeline.cache.semantic_cache import PolicyBook
from pipeline.datasets import LabelledQuery
from pipeline.routing.factory import build_classifier
from pipeline.settings import load_settings

SEED = 3


def by_intent(rows: Sequence[LabelledQuery]) -> dict[str, list[LabelledQuery]]:
    grouped: dict[str, list[LabelledQuery]] = defaultdict(list)
    for row in rows:
        grouped[row.label].append(row)
    return dict(grouped)


def stratified_folds(rows: Sequence[LabelledQuery], k: int, rng: random.Random) -> list[list[LabelledQuery]]:
    """``k`` folds, each intent's rows dealt round-robin after a shuffle."""
    folds: list[list[LabelledQuery]] = [[] for _ in range(k)]
    for _, group in sorted(by_intent(rows).items()):
        group = group[:]
        rng.shuffle(group)
        for i, row in enumerate(group):
            folds[i % k].append(row)
    return folds


def subsample(rows: Sequence[LabelledQuery], per_intent: int, rng: random.Random) -> list[LabelledQuery]:
    """At most ``per_intent`` rows of each intent (0: all of them)."""
    if per_intent <= 0:
        return list(rows)
    out: list[LabelledQuery] = []
    for _, group in sorted(by_intent(rows).items()):
        group = group[:]
        rng.shuffle(group)
        out += group[:per_intent]
    return out


class Tally:
    def __init__(self) -> None:
        self.queries = self.hits = self.correct = self.oos_queries = self.oos_hits = 0
        self.oos_asks = 0  # caches the out-of-scope queries were asked of
        self.wrong: list[dict[str, Any]] = []
        self.oos_answered: set[str] = set()  # distinct out-of-scope queries answered by any fold's cache

    def add(self, report: dict[str, Any], wrong: list[dict[str, Any]]) -> None:
        oos_q, oos_h = report["out_of_scope_queries"], report["out_of_scope_hits"]
        self.queries += report["queries"] - oos_q
        self.hits += report["hits"] - oos_h
        self.correct += report["correct_hits"]
        self.oos_queries += oos_q
        self.oos_hits += oos_h
        self.oos_asks += oos_q > 0
        self.wrong += wrong
        self.oos_answered |= {w["text"] for w in wrong if w["out_of_scope"]}

    def row(self, per_intent: int, seed_rows: float) -> dict[str, Any]:
        # every answer served counts, an out-of-scope query's as a wrong one; each out-of-scope
        # query once (its answers averaged over the caches it was asked of), as in one cache's life
        served = self.hits + round(self.oos_hits / max(self.oos_asks, 1))
        return {"per_intent": per_intent, "mean_seed_rows": round(seed_rows, 1),
                "in_scope_queries": self.queries, "in_scope_hits": self.hits,
                "in_scope_hit_rate": round(self.hits / self.queries, 4) if self.queries else 0.0,
                "correct_hits": self.correct,
                "precision": round(self.correct / served, 4) if served else 0.0,
                "precision_ci95": [round(x, 4) for x in wilson(self.correct, served)],
                "in_scope_precision": round(self.correct / self.hits, 4) if self.hits else 0.0,
                "out_of_scope_queries": self.oos_queries, "out_of_scope_hits": self.oos_hits,
                "out_of_scope_hit_rate": round(self.oos_hits / self.oos_queries, 4) if self.oos_queries else None,
                "out_of_scope_ci95": ([round(x, 4) for x in wilson(self.oos_hits, self.oos_queries)]
                                      if self.oos_queries else None),
                # with --oos-every-fold the same query is asked of five caches: these are not
                # independent trials, so this count says how many different questions slip through
                "out_of_scope_distinct_answered": sorted(self.oos_answered),
                "wrong_answers": self.wrong[:30]}


def run_one(settings: Any, batcher: Any, seed: list[LabelledQuery], queries: list[LabelledQuery],
            policy: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    opinions = build_classifier(settings, batcher, seed)
    result = evaluate(batcher.embedder, seed, queries, policy, opinions=opinions)
    return result.to_dict(), result.false_hits(limit=len(queries))


def curve(settings: Any, batcher: Any, policy: Any, labelled: list[LabelledQuery], oos: list[LabelledQuery],
          folds: int, densities: Sequence[int], name: str, oos_every_fold: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    parts = stratified_folds(labelled, folds, rng)
    rows = []
    for n in densities:
        tally, seeds = Tally(), []
        for k, held_out in enumerate(parts):
            pool = [r for i, part in enumerate(parts) if i != k for r in part]
            seed = subsample(pool, n, random.Random(SEED + k))
            seeds.append(len(seed))
            asked = held_out + (oos if k == 0 or oos_every_fold else [])
            report, wrong = run_one(settings, batcher, seed, asked, policy)
            tally.add(report, wrong)
            print(f"{name}: {n or 'all'} per intent, fold {k + 1}/{folds}: "
                  f"{report['hits']} hits of {report['queries']}", file=sys.stderr, flush=True)
        rows.append(tally.row(n, sum(seeds) / len(seeds)))
    return rows


def reference_curve(settings: Any, batcher: Any, policy: Any, seed_rows: list[LabelledQuery],
                    queries: list[LabelledQuery], densities: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for n in densities:
        seed = subsample(seed_rows, n, random.Random(SEED))
        tally = Tally()
        report, wrong = run_one(settings, batcher, seed, queries, policy)
        tally.add(report, wrong)
        print(f"reference: {n or 'all'} per intent: {report['hits']} hits of {report['queries']}",
              file=sys.stderr, flush=True)
        rows.append(tally.row(n, len(seed)))
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oos_rows = [r for r in result["curve"] if r["out_of_scope_queries"]]
    fig, axes = plt.subplots(1, 2 if oos_rows else 1, figsize=(12 if oos_rows else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    curves = ((Path(result["labelled"][0]).stem, result["curve"], result["intents"], "o-"),
              (Path(result.get("reference_files", ["reference"])[0]).stem, result["reference"],
               result["reference_intents"], "s--"))
    for name, rows, intents, style in curves:
        if rows:
            xs = [r["mean_seed_rows"] / max(1, intents) for r in rows]
            ax.plot(xs, [r["in_scope_hit_rate"] for r in rows], style, label=f"{name} ({intents} intents)")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("labelled examples per intent in the seed")
    ax.set_ylabel("in-scope hit rate")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("Cache hits against labelled examples per intent (default policy)")
    if oos_rows:
        ax = axes[0][1]
        xs = [r["mean_seed_rows"] / max(1, result["intents"]) for r in oos_rows]
        rates = [100 * r["out_of_scope_hit_rate"] for r in oos_rows]
        low = [rate - 100 * r["out_of_scope_ci95"][0] for rate, r in zip(rates, oos_rows, strict=True)]
        high = [100 * r["out_of_scope_ci95"][1] - rate for rate, r in zip(rates, oos_rows, strict=True)]
        ax.errorbar(xs, rates, yerr=[low, high], fmt="o-", capsize=3,
                    label=f"{result['oos_rows']} out-of-scope queries, Wilson 95 %"
                          + (" (each ask counted as a trial)" if result.get("oos_every_fold") else ""))
        ax.axhline(0.5, color="red", lw=0.8, ls=":", label="target 0.5 %")
        ax.set_xlabel("labelled examples per intent in the seed")
        ax.set_ylabel("out-of-scope queries answered (%)")
        ax.set_ylim(0, None)
        ax.legend(loc="upper left", fontsize=8)
        asked = "each fold's cache" if result.get("oos_every_fold") else "one fold's cache"
        ax.set_title(f"Out-of-scope queries answered (asked of {asked})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labelled", type=Path, nargs="+", required=True, help="CSV text,label (in scope)")
    parser.add_argument("--oos", type=Path, help="CSV text,label of out-of-scope queries (a label no seed has)")
    parser.add_argument("--oos-every-fold", action="store_true",
                        help="ask the out-of-scope queries of every fold's seed, not only the first")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--per-intent", type=ints, default=[8, 15, 24])
    parser.add_argument("--reference", type=Path, nargs=2, metavar=("SEED", "QUERIES"))
    parser.add_argument("--reference-per-intent", type=ints, default=[8, 15, 24, 0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    labelled = [r for path in args.labelled for r in read_labelled(path)]
    oos = read_labelled(args.oos) if args.oos else []
    known = {r.label for r in labelled}
    if any(r.label in known for r in oos):
        raise SystemExit("--oos rows must carry a label the labelled set does not have")
    settings = load_settings()
    policy = PolicyBook.load(settings.cache_policy_file).default
    batcher = build_embedder(settings)
    try:
        result: dict[str, Any] = {
            "labelled": [str(p) for p in args.labelled], "rows": len(labelled), "intents": len(known),
            "oos": str(args.oos) if args.oos else None, "oos_rows": len(oos), "folds": args.folds,
            "oos_every_fold": args.oos_every_fold,
            "policy": policy.to_dict(),
            "curve": curve(settings, batcher, policy, labelled, oos, args.folds, args.per_intent, "labelled",
                           args.oos_every_fold),
            "reference": None, "reference_intents": 0,
        }
        if args.reference:
            ref_seed, ref_queries = read_labelled(args.reference[0]), read_labelled(args.reference[1])
            result["reference"] = reference_curve(settings, batcher, policy, ref_seed, ref_queries,
                                                  args.reference_per_intent)
            result["reference_files"] = [str(p) for p in args.reference]
            result["reference_intents"] = len({r.label for r in ref_seed})
    finally:
        batcher.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    for name in ("curve", "reference"):
        for r in result[name] or []:
            oos_part = (f"  out of scope {r['out_of_scope_hits']}/{r['out_of_scope_queries']} {r['out_of_scope_ci95']}"
                        if r["out_of_scope_queries"] else "")
            print(f"{name:9s} {r['per_intent'] or 'all':>4} per intent (seed {r['mean_seed_rows']:>7}): "
                  f"hit rate {r['in_scope_hit_rate']:.3f}  precision {r['precision']:.4f} {r['precision_ci95']}"
                  f"{oos_part}")


if __name__ == "__main__":
    main()
