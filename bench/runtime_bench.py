"""Benchmark: does the runtime cost anything? Throughput of intake alone and of the whole
pipeline, one worker, transactions on, on real Kafka and Redis.

For each repeat, N banking77 tickets are pre-loaded on a fresh ingress; one worker drains
them; tickets/s is measured between the first and the last output a read_committed reader
sees (``tickets.accepted`` for intake alone, ``tickets.responses`` for the whole pipeline).
The median and the min-max over repeats are reported (the machine is shared and noisy).

Run it on two checkouts (before and after a runtime change) and compare the medians:

    ./run ticketflow services up
    .venv/bin/python bench/runtime_bench.py --label after --out bench/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.admin import apply_topics, delete_topics
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.events import TicketSubmitted
from pipeline.settings import Settings, load_settings
from pipeline.topic_reader import TopicReader
from tests.helpers import WorkerProcess


def tickets(n: int, tag: str) -> list[TicketSubmitted]:
    _, held = banking77_split()
    return [TicketSubmitted(ticket_id=f"{tag}-{i}", tenant_id="bench", body=q.text, customer_id=f"C-{1 + i % 50:05d}")
            for i, q in enumerate(banking77_sample(n, seed=5, rows=held))]


def fresh(settings: Settings) -> Settings:
    s = settings.model_copy(update={"topic_prefix": f"rtbench-{uuid.uuid4().hex[:8]}."})
    apply_topics(s)
    return s


def drain(settings: Settings, n: int, processors: tuple[str, ...], topic: str, log: Path) -> dict[str, Any]:
    """Seconds between the first and the last of ``n`` outputs on ``topic`` (their produce
    timestamps, so the reader's own polling does not blur the span)."""
    client = TicketflowClient(settings)
    client.submit(tickets(n, "rt"))
    worker = WorkerProcess(settings, log, *processors).start()
    arrivals: list[float] = []
    reader = TopicReader(settings.kafka_common(), f"{settings.topic_prefix}{topic}")
    deadline = time.monotonic() + 900
    try:
        while len(arrivals) < n and time.monotonic() < deadline:
            got = reader.poll(1.0)
            arrivals.extend(m.timestamp()[1] / 1000 for m in got)  # when the worker produced it
            if got and len(arrivals) % 500 < len(got):
                print(f"  {'+'.join(processors) or 'all'}: {len(arrivals)}/{n}", file=sys.stderr)
    finally:
        reader.close()
        worker.stop()
        delete_topics(settings)  # left-over topics slowed the local broker down (README, Benchmark)
    arrivals.sort()
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return {"outputs": len(arrivals), "seconds": round(span, 2),
            "per_s": round((len(arrivals) - 1) / span, 1) if span > 0 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="e.g. before / after, or a commit")
    parser.add_argument("--intake-tickets", type=int, default=5000)
    parser.add_argument("--pipeline-tickets", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    base = load_settings()
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"intake": [], "pipeline": []}
    for r in range(args.repeat):
        print(f"repeat {r + 1}/{args.repeat}", file=sys.stderr)
        runs["intake"].append(drain(fresh(base), args.intake_tickets, ("intake",), "tickets.accepted",
                                    logs / f"rt-intake-{args.label}-{r}.log"))
        runs["pipeline"].append(drain(fresh(base), args.pipeline_tickets, (), "tickets.responses",
                                      logs / f"rt-pipeline-{args.label}-{r}.log"))
    summary = {name: {"median_per_s": statistics.median(x["per_s"] or 0 for x in v),
                      "min_per_s": min(x["per_s"] or 0 for x in v), "max_per_s": max(x["per_s"] or 0 for x in v),
                      "runs": v} for name, v in runs.items()}
    result = {"label": args.label, "repeat": args.repeat, "intake_tickets": args.intake_tickets,
              "pipeline_tickets": args.pipeline_tickets, **summary}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"runtime_bench_{args.label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("median_per_s", "min_per_s", "max_per_s")}
                      for k, v in summary.items()}, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
