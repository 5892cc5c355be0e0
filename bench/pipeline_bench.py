"""Benchmark: throughput and end-to-end latency of intake -> router -> egress on real Kafka.

For each commit interval, with one worker process (both processors, transactions on):

* throughput: N tickets pre-loaded on the ingress; the worker drains them; tickets/s is
  measured between the first and the last response a read_committed reader sees;
* latency: tickets submitted at a fixed rate (default 200/s) to a warm worker; end-to-end
  latency is the reader's arrival time minus the ticket's created_at (client clock).

Prints progress on stderr, writes JSON (and a PNG plot when matplotlib is installed):

    ./run ticketflow services up
    .venv/bin/python bench/pipeline_bench.py --intervals 25,50,100,250 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline import services
from pipeline.admin import apply_topics, delete_topics
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample
from pipeline.demo import percentile
from pipeline.events import TicketSubmitted
from pipeline.settings import Settings, load_settings
from tests.helpers import WorkerProcess


def tickets(n: int, tag: str) -> list[TicketSubmitted]:
    return [TicketSubmitted(ticket_id=f"{tag}-{i}", tenant_id="bench", body=q.text)
            for i, q in enumerate(banking77_sample(n, seed=1))]


def fresh(settings: Settings, interval_ms: int) -> Settings:
    s = settings.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}.",
                                    "commit_interval_ms": interval_ms})
    apply_topics(s)
    return s


def throughput(settings: Settings, n: int, log_dir: Path) -> dict[str, Any]:
    client = TicketflowClient(settings)
    batch = tickets(n, "tp")
    client.submit(batch)
    worker = WorkerProcess(settings, log_dir / f"tp-{settings.commit_interval_ms}.log").start()
    arrivals: list[int] = []
    try:
        for item in client.results(expect=n, timeout_s=600):
            arrivals.append(item.received_at)
            if len(arrivals) % 5000 == 0:
                print(f"  throughput: {len(arrivals)}/{n}", file=sys.stderr)
    finally:
        worker.stop()
    span_s = (arrivals[-1] - arrivals[0]) / 1000
    return {"tickets": len(arrivals), "seconds": span_s,
            "tickets_per_s": round((len(arrivals) - 1) / span_s, 1) if span_s > 0 else None}


def latency(settings: Settings, rate: float, seconds: float, log_dir: Path) -> dict[str, Any]:
    client = TicketflowClient(settings)
    n = int(rate * seconds)
    batch = tickets(n, "lat")
    ids = {t.ticket_id for t in batch}
    worker = WorkerProcess(settings, log_dir / f"lat-{settings.commit_interval_ms}.log").start()
    # Warm up: one ticket through both stages, so group joins are not in the figures.
    warm = TicketSubmitted(ticket_id="warm", tenant_id="bench", body="warm up")
    client.submit([warm])
    for _ in client.results(expect=1, ticket_ids={"warm"}, timeout_s=120):
        pass
    e2e: list[float] = []
    stages: dict[str, list[float]] = {}

    def read() -> None:
        for item in client.results(expect=n, ticket_ids=ids, timeout_s=seconds + 120):
            e2e.append(item.received_at - item.event.created_at)
            for stage, ms in item.event.stage_latency_ms.items():
                stages.setdefault(stage, []).append(ms)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        interval = 1.0 / rate
        next_at = time.monotonic()
        for i, ticket in enumerate(batch):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            client.submit([ticket], flush=False)
            client.producer.poll(0)
            next_at += interval
            if i % int(rate * 10) == 0:
                print(f"  latency: submitted {i}/{n}", file=sys.stderr)
        client.flush()
        reader.join()
    finally:
        worker.stop()
    return {
        "rate_per_s": rate, "tickets": len(e2e),
        "e2e_ms": {q: percentile(e2e, float(q[1:])) for q in ("p50", "p95", "p99")},
        "stage_ms_p99": {s: percentile(v, 99) for s, v in stages.items()},
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over runs (the machine is shared and noisy)."""
    def med(values: list[float]) -> float:
        return statistics.median(values)
    return {
        "throughput": {"tickets_per_s": med([r["throughput"]["tickets_per_s"] for r in runs])},
        "latency": {
            "rate_per_s": runs[0]["latency"]["rate_per_s"],
            "e2e_ms": {q: med([r["latency"]["e2e_ms"][q] for r in runs]) for q in ("p50", "p95", "p99")},
        },
    }


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    intervals = [r["commit_interval_ms"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    medians = [r["throughput"]["tickets_per_s"] for r in results]
    spans = [[run["throughput"]["tickets_per_s"] for run in r["runs"]] for r in results]
    lows = [m - min(span) for m, span in zip(medians, spans, strict=True)]
    highs = [max(span) - m for m, span in zip(medians, spans, strict=True)]
    left.errorbar(intervals, medians, yerr=[lows, highs], fmt="o-", capsize=4, label="median, min-max of runs")
    left.axhline(2000, color="grey", linestyle="--", label="target")
    left.set_ylim(bottom=0)
    left.set(xlabel="commit interval (ms)", ylabel="tickets/s (one worker)", title="Throughput, intake + router")
    left.legend()
    for q in ("p50", "p95", "p99"):
        right.plot(intervals, [r["latency"]["e2e_ms"][q] for r in results], "o-", label=q)
    right.axhline(300, color="grey", linestyle="--", label="p99 target")
    right.set(xlabel="commit interval (ms)", ylabel="end-to-end ms",
              title=f"Latency at {results[0]['latency']['rate_per_s']:.0f} tickets/s")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", default="25,50,100,250", help="commit intervals, ms")
    parser.add_argument("--tickets", type=int, default=20000, help="tickets for the throughput run")
    parser.add_argument("--rate", type=float, default=200.0, help="tickets/s for the latency run")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of the latency run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per interval; the median is reported")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--plot-only", type=Path, default=None, help="re-plot an earlier JSON result")
    args = parser.parse_args()
    if args.plot_only is not None:
        plot(json.loads(args.plot_only.read_text())["results"], args.plot_only.with_suffix(".png"))
        return 0
    settings = load_settings()
    services.up(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for interval in [int(x) for x in args.intervals.split(",")]:
        runs = []
        for run in range(args.repeat):
            print(f"commit interval {interval} ms, run {run + 1}/{args.repeat}", file=sys.stderr)
            run_settings = fresh(settings, interval)
            tp = throughput(run_settings, args.tickets, args.out)
            delete_topics(run_settings)
            run_settings = fresh(settings, interval)
            lat = latency(run_settings, args.rate, args.seconds, args.out)
            delete_topics(run_settings)
            runs.append({"throughput": tp, "latency": lat})
            print(json.dumps(runs[-1]), file=sys.stderr)
        results.append({"commit_interval_ms": interval, **median_run(runs), "runs": runs})
    report = {"machine": {"cpus": __import__("os").cpu_count()}, "results": results}
    (args.out / "pipeline_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    if plot(results, args.out / "pipeline_bench.png"):
        print(f"plot: {args.out / 'pipeline_bench.png'}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
