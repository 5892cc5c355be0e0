"""Latency per path against load: `ticketflow demo` on held-out banking77 tickets at 20, 50,
100 and 200 tickets/s (one worker, exactly-once on, the simulated provider at its real
latency), each on fresh topics with a cold cache, as a user runs it.

For each rate the demo's own report gives the end-to-end percentiles per path (cache, rule,
tool, agent, escalated), per stage, and the naive loop's latency for the same tickets (the
strong model for every ticket, from the provider's latency model). Targets (issue 14, at
100 tickets/s): cache p99 <= 200 ms, rule and tool p99 <= 300 ms, agent p50 <= 2.5 s and
p99 <= 8 s.

    PYTHONPATH=. .venv/bin/python bench/latency_sweep_bench.py --out bench/results

Writes ``latency_sweep.json`` and ``latency_sweep.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pipeline.admin import delete_topics
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.settings import load_settings

TARGETS_AT_100 = {("cache", "p99"): 200.0, ("rule", "p99"): 300.0, ("tool", "p99"): 300.0,
                  ("agent", "p50"): 2500.0, ("agent", "p99"): 8000.0}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def held_out_csv(n: int, path: Path) -> Path:
    _, held = banking77_split()
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        for query in banking77_sample(n, seed=13, rows=held):
            writer.writerow([query.text, query.label])
    return path


def demo(rate: float, tickets: int, input_csv: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    prefix = f"sweep-{uuid.uuid4().hex[:6]}."
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": prefix}
    try:
        command = [sys.executable, "-m", "pipeline.cli.main", "demo", "--json", "--input", str(input_csv),
                   "--tickets", str(tickets), "--rate", str(rate), *extra]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, check=False)
    finally:  # hundreds of left-over topics slowed the local broker down (README, Benchmark)
        delete_topics(load_settings().model_copy(update={"topic_prefix": prefix}))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r["rate"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (name, paths) in zip(axes, (("deflected", ("cache", "rule", "tool")), ("agent", ("agent",))),
                                 strict=True):
        for p in paths:
            for q, style in (("p50", "-o"), ("p99", "--o")):
                ys = [r["latency_by_path_ms"].get(p, {}).get(q) for r in results]
                ax.plot(rates, ys, style, label=f"{p} {q}")
        if name == "agent":
            ax.plot(rates, [r["naive_latency_ms"]["p50"] for r in results], ":", color="grey",
                    label="naive loop p50")
        ax.set_xlabel("tickets per second (one worker)")
        ax.set_ylabel("end to end (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{name} tickets")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rates", default="20,50,100,200")
    parser.add_argument("--seconds", type=float, default=10.0, help="of traffic per rate")
    parser.add_argument("--split-background", action="store_true",
                        help="`demo --split-background`: background processors in a worker process of their own")
    parser.add_argument("--split-agent", action="store_true", help="`demo --split-agent`")
    parser.add_argument("--nice", type=int, default=0, help="`demo --nice N` for the processes split off")
    args = parser.parse_args()
    extra = (*(("--split-background",) if args.split_background else ()),
             *(("--split-agent",) if args.split_agent else ()), *(("--nice", str(args.nice)) if args.nice else ()))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (float(r) for r in args.rates.split(",")):
            tickets = int(rate * args.seconds)
            say(f"sweep: {tickets} held-out tickets at {rate:g}/s")
            report = demo(rate, tickets, held_out_csv(tickets, Path(tmp) / f"held-{rate:g}.csv"), extra)
            results.append({"rate": rate, "tickets": tickets, "by_path": report["by_path"],
                            "latency_by_path_ms": report["latency_by_path_ms"],
                            "stage_latency_ms": report["stage_latency_ms"],
                            "naive_latency_ms": report["naive_latency_ms"], "latency_ms": report["latency_ms"]})
            say(f"sweep: {rate:g}/s: " + ", ".join(f"{p} p50 {v['p50']:.0f} p99 {v['p99']:.0f} ms"
                                                   for p, v in report["latency_by_path_ms"].items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency_sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "latency_sweep.png")
    print(json.dumps([{k: r[k] for k in ("rate", "latency_by_path_ms", "naive_latency_ms")} for r in results],
                     indent=2))
    at_100 = next((r for r in results if r["rate"] == 100), None)
    if at_100 is not None:
        for (path, q), target in TARGETS_AT_100.items():
            value = at_100["latency_by_path_ms"].get(path, {}).get(q)
            verdict = "n/a" if value is None else ("met" if value <= target else "MISSED")
            print(f"at 100/s: {path} {q} {value} ms (target <= {target:.0f}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
