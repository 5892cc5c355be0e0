"""Router and tool latencies, the issue's two budgets, as percentiles and a plot.

1. decision: per held-out banking77 ticket, the router's decision (intent classification over
   the tune part's 8,005 examples, entity extraction, rule matching, template rendering),
   embedding excluded (the vectors are computed first), one ticket at a time as the worst
   case, and per ticket inside the processor's batches of 64. Budget: p99 <= 5 ms.
2. tools: the same card_status lookups through the ToolRunner (allowlist, schema validation,
   breaker) answered by the database (first call; SQLite, or ``--database-url``) and by the
   Redis tool cache (every further call). Budget for a cache hit: p99 <= 2 ms. Redis is the
   local one (`ticketflow services up`).

    PYTHONPATH=. .venv/bin/python bench/router_bench.py --out bench/results
    PYTHONPATH=. .venv/bin/python bench/router_bench.py --database-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import services
from pipeline.adapters.redis_tool_cache import RedisToolCache
from pipeline.adapters.sql_bank import SqlBank
from pipeline.cache.factory import build_embedder
from pipeline.datasets import banking77_split
from pipeline.pii import redact
from pipeline.resilience import CircuitBreaker
from pipeline.routing.factory import build_engine
from pipeline.runtime.context import redis_client
from pipeline.settings import load_settings
from pipeline.tools.banking import banking_tools
from pipeline.tools.demo_bank import customer_id, seed_bank
from pipeline.tools.runner import ToolRunner


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stats(values_ms: list[float]) -> dict[str, float]:
    a = np.array(values_ms)
    return {"n": len(values_ms), **{f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)},
            "max_ms": round(float(a.max()), 3)}


def decisions(settings: Any) -> tuple[dict[str, Any], list[float]]:
    batcher = build_embedder(settings)
    try:
        engine = build_engine(settings, batcher)
        _, held = banking77_split()
        texts = [redact(q.text) for q in held]
        vectors = batcher.encode_sorted(texts)
    finally:
        batcher.close()
    today = date.today()
    single = []
    for i, query in enumerate(held):
        started = time.perf_counter()
        [intent] = engine.classifier.classify([texts[i]], vectors[i:i + 1])
        engine.decide_with(intent, query.text, "C-00001", today)
        single.append((time.perf_counter() - started) * 1000)
    batched = []
    for start in range(0, len(held), 64):
        items = [(texts[i], held[i].text, "C-00001", today) for i in range(start, min(start + 64, len(held)))]
        started = time.perf_counter()
        engine.decide_many(items, vectors[start:start + len(items)])
        batched.append((time.perf_counter() - started) * 1000 / len(items))
    return {"examples": len(engine.classifier.examples), "tickets": len(held), "single": stats(single),
            "per_ticket_in_batches_of_64": stats(batched)}, single


class _Routes:
    def allowed_tools(self, route: str) -> frozenset[str] | None:
        return frozenset({"card_status"})


def tools(settings: Any, database_url: str | None, customers: int = 200,
          rounds: int = 25) -> tuple[dict[str, Any], list[float], list[float]]:
    services.up(settings, adopt=True)
    with tempfile.TemporaryDirectory() as tmp:
        bank = SqlBank(database_url or f"sqlite:///{tmp}/bank.db")
        seed_bank(bank, ["bench"], customers=customers)
        cache = RedisToolCache(redis_client(settings), f"bench-{time.time_ns()}:", ttl_s=600)
        runner = ToolRunner(banking_tools(bank), _Routes(), cache, breaker=lambda t: CircuitBreaker(10**6, 1.0))
        database: list[float] = []
        cached: list[float] = []
        for r in range(rounds + 1):
            for n in range(1, customers + 1):
                arguments = json.dumps({"customer_id": customer_id(n)})
                out = runner.run("bench", "lookup", "card_status", arguments, f"k-{r}-{n}")
                assert out.ok, out
                (cached if out.cached else database).append(out.latency_ms)
        queries = bank.queries
        runner.close()
        bank.close()
    report = {"database": bank.engine.dialect.name, "database_call": stats(database), "redis_cache_hit": stats(cached),
              "database_queries": queries, "cache_hits": len(cached),
              "hit_vs_database_p50": round(stats(database)["p50_ms"] / stats(cached)["p50_ms"], 1)}
    return report, database, cached


def plot(single: list[float], database: list[float], cached: list[float], path: Path, database_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for values, label in ((single, "router decision (one ticket, no embedding)"),
                          (cached, "tool call, Redis cache hit"), (database, f"tool call, {database_name}")):
        ordered = np.sort(values)
        ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=label)
    for budget, name in ((5, "decision budget 5 ms"), (2, "cache-hit budget 2 ms")):
        ax.axvline(budget, linestyle="--", linewidth=0.8, color="grey")
        ax.text(budget, 0.02, name, rotation=90, fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log)")
    ax.set_ylabel("share of calls at or below")
    ax.set_title("ticketflow router and tool latency (CDF)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--database-url", default=None,
                        help="the tools' database (SQLAlchemy URL; default: a temporary SQLite file)")
    args = parser.parse_args()
    settings = load_settings()
    args.out.mkdir(parents=True, exist_ok=True)
    say("router decisions on the held-out banking77 part...")
    decision_report, single = decisions(settings)
    say(f"  {decision_report}")
    say("tool calls: SQLite and the Redis tool cache...")
    tool_report, database, cached = tools(settings, args.database_url)
    say(f"  {tool_report}")
    report = {"decision": decision_report, "tools": tool_report,
              "budgets": {"decision_p99_ms": 5.0, "tool_cache_hit_p99_ms": 2.0}}
    name = "router_bench" if args.database_url is None else f"router_bench_{tool_report['database']}"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(single, database, cached, args.out / f"{name}.png", tool_report["database"])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
