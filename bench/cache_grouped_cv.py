"""The hit policy across paraphrase groups: the current defaults against the previous ones.

Folds keep near-paraphrases together (cosine >= 0.9), as `ticketflow cache calibrate` does;
each policy is judged on the same neighbours, with its Wilson 95 % interval. Also times the
second opinion (the router's classifier in the cache stage) per ticket.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/cache_grouped_cv.py
"""

from __future__ import annotations

import json
import time

from pipeline.cache.audit import wilson
from pipeline.cache.calibrate import grouped_folds, paraphrase_groups
from pipeline.cache.embedder import encode_all
from pipeline.cache.factory import build_embedder
from pipeline.cache.policy import HitPolicy, evidence, exact_neighbours, judge
from pipeline.datasets import banking77_split
from pipeline.pii import redact
from pipeline.routing.factory import build_classifier
from pipeline.settings import load_settings

#: The defaults before issue 11 (calibrated for a pooled point estimate on random folds).
PREVIOUS = HitPolicy(k=30, temperature=0.05, min_similarity=0.70, min_share=0.85, min_agree=2, margin=0.03)


def main() -> None:
    settings = load_settings()
    batcher = build_embedder(settings)
    try:
        tune, holdout = banking77_split()
        texts = [redact(r.text) for r in tune]
        vectors = encode_all(batcher, texts)
        parts = grouped_folds(paraphrase_groups(vectors), 5, 7)
        found = []
        for f, part in enumerate(parts):
            rest = [i for g, p in enumerate(parts) if g != f for i in p]
            found.append((part, exact_neighbours(vectors[part], vectors[rest], [tune[i].label for i in rest],
                                                 [texts[i] for i in rest], 30)))
        report: dict[str, object] = {}
        for name, policy in (("previous", PREVIOUS), ("current", HitPolicy())):
            hits = correct = 0
            for part, neighbours in found:
                for i, near in zip(part, neighbours, strict=True):
                    verdict = judge(policy, evidence(policy, texts[i], near))
                    hits += verdict.hit
                    correct += verdict.hit and verdict.resolution_key == tune[i].label
            low, high = wilson(correct, hits)
            report[name] = {"hit_rate": round(hits / len(tune), 4), "precision": round(correct / hits, 4),
                            "precision_ci95": [round(low, 4), round(high, 4)]}
        classifier = build_classifier(settings, batcher)
        queries = [redact(r.text) for r in holdout[:640]]
        query_vectors = encode_all(batcher, queries)
        started = time.perf_counter()
        for start in range(0, len(queries), 64):
            classifier.opinions(queries[start:start + 64], query_vectors[start:start + 64])
        report["second_opinion_ms_per_ticket"] = round((time.perf_counter() - started) / len(queries) * 1000, 3)
        print(json.dumps(report))
    finally:
        batcher.close()


if __name__ == "__main__":
    main()
