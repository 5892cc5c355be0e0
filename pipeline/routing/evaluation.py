"""`ticketflow route eval`: how much the router answers without an LLM, and how rightly.

For each labelled query (``text,label``, the label being the intent) the router decides as
the processor would, from the text alone (a ``customer_id`` column, when present, enables
the rules that look the customer up). Reported: ``deflection_rate`` (share answered by a
rule or a tool, no LLM), ``precision`` (deflected queries whose rule intent equals the
label), the split by action, and the decision latency per query excluding embedding.
A tool route counts as deflected by its decision; whether the tool then answers is the
tool processor's part (a failure escalates, it never reaches the LLM either).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from pipeline.cache.embedder import Embedder
from pipeline.datasets import LabelledQuery
from pipeline.pii import redact
from pipeline.routing.engine import RouteDecision, RouteEngine


@dataclass
class RouteEvaluation:
    queries: int
    deflected: int
    correct: int
    by_action: dict[str, int]
    abstained: int
    wrong: list[tuple[str, str, str]]  # (text, label, rule intent) of wrong deflections
    latencies_ms: list[float]

    def to_dict(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms or [0.0])
        return {
            "queries": self.queries,
            "deflected": self.deflected,
            "deflection_rate": round(self.deflected / self.queries, 4) if self.queries else 0.0,
            "precision": round(self.correct / self.deflected, 4) if self.deflected else None,
            "by_action": dict(sorted(self.by_action.items())),
            "abstained": self.abstained,
            "decision_p50_ms": round(float(np.percentile(lat, 50)), 3),
            "decision_p99_ms": round(float(np.percentile(lat, 99)), 3),
            "wrong_examples": [{"text": t, "label": label, "routed_as": got} for t, label, got in self.wrong[:20]],
        }


def evaluate(engine: RouteEngine, embedder: Embedder, queries: Sequence[LabelledQuery],
             customers: Sequence[str | None] | None = None, today: date | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> RouteEvaluation:
    today = today or date.today()
    customers = customers or [None] * len(queries)
    texts = [redact(q.text) for q in queries]
    vectors = np.zeros((0, 0), dtype=np.float32)
    chunks = []
    for start in range(0, len(texts), 256):
        chunks.append(embedder.encode(texts[start:start + 256]))
        if progress:
            progress("embed", min(start + 256, len(texts)), len(texts))
    vectors = np.vstack(chunks) if chunks else vectors
    decisions: list[RouteDecision] = []
    latencies = []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        [intent] = engine.classifier.classify([texts[i]], vectors[i:i + 1])
        decisions.append(engine.decide_with(intent, query.text, customers[i], today))
        latencies.append((time.perf_counter() - started) * 1000)
        if progress and ((i + 1) % 200 == 0 or i + 1 == len(queries)):
            progress("route", i + 1, len(queries))
    by_action: Counter[str] = Counter(d.kind for d in decisions)
    deflected = [(q, d) for q, d in zip(queries, decisions, strict=True) if d.deflected]
    wrong = [(q.text, q.label, (d.rule.intent if d.rule else None) or "?") for q, d in deflected
             if d.rule is None or d.rule.intent != q.label]
    return RouteEvaluation(
        queries=len(queries), deflected=len(deflected), correct=len(deflected) - len(wrong),
        by_action=dict(by_action), abstained=sum(1 for d in decisions if d.intent.intent is None),
        wrong=wrong, latencies_ms=latencies)
