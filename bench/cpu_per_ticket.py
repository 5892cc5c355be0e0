"""CPU per ticket: where the machine's CPU goes while one worker drains the whole pipeline.

N held-out banking77 tickets are pre-loaded on a fresh ``tickets.ingress``; one worker (every
processor) drains them to ``tickets.responses``, as ``bench/runtime_bench.py`` does. Every
second the CPU time of each process is read from ``/proc`` and grouped: the worker, its
encoder process, the broker, Redis, anything else on the machine. Reported for the window
between the first and the last answer: CPU-milliseconds per ticket per group, the drain rate,
and how many cores a given rate would need at that cost (issue 14's 500 tickets/s among them).

Run it with the simulated model sped up and the provider's rate limit lifted, so that the
worker, not the provider's latency or the guardrail, is the bound:

    ./run ticketflow services up
    TICKETFLOW_SIM_TIME_SCALE=0.05 TICKETFLOW_LLM_RATE_PER_S=100000 \\
        PYTHONPATH=. .venv/bin/python bench/cpu_per_ticket.py --tickets 5000 --out bench/results

Writes ``cpu_per_ticket.json`` and ``cpu_per_ticket.png`` (the groups' shares of a core, second
by second).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.procstat import processes
from bench.runtime_bench import fresh, tickets
from pipeline.admin import delete_topics
from pipeline.client import TicketflowClient
from pipeline.settings import load_settings
from pipeline.topic_reader import TopicReader
from tests.helpers import WorkerProcess

GROUPS = ("worker", "encoder", "broker", "redis", "other")


def group_of(pid: int, parent: int, command: str, worker: int) -> str:
    if pid == worker:
        return "worker"
    if parent == worker:
        return "encoder"  # the worker's children: its encoder process (pipeline/cache/embedder_process.py)
    if "kafka.Kafka" in command:
        return "broker"
    if "redis-server" in command:
        return "redis"
    return "other"


class Sampler:
    """CPU seconds per group, second by second, on a thread of its own."""

    def __init__(self, worker_pid: int) -> None:
        self.worker = worker_pid
        self.series: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        before = processes()
        while not self.stop.wait(1.0):
            after = processes()
            used: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
            for pid, (command, parent, cpu) in after.items():
                if pid in before and pid != os.getpid():
                    used[group_of(pid, parent, command, self.worker)] += cpu - before[pid][2]
            self.series.append((time.time(), dict(used)))
            before = after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    settings = fresh(load_settings())
    client = TicketflowClient(settings)
    client.submit(tickets(args.tickets, "cpu"))
    worker = WorkerProcess(settings, args.out / "logs" / "cpu-per-ticket-worker.log").start()
    assert worker.proc is not None
    sampler = Sampler(worker.proc.pid)
    sampler.thread.start()
    stamps: list[float] = []
    reader = TopicReader(settings.kafka_common(), f"{settings.topic_prefix}tickets.responses")
    try:
        deadline = time.monotonic() + 1200
        while len(stamps) < args.tickets and time.monotonic() < deadline:
            got = reader.poll(1.0)
            stamps.extend(m.timestamp()[1] / 1000 for m in got)
            if got and len(stamps) % 1000 < len(got):
                print(f"cpu-per-ticket: {len(stamps)}/{args.tickets} answered", file=sys.stderr, flush=True)
    finally:
        sampler.stop.set()
        sampler.thread.join()
        reader.close()
        worker.stop()
        delete_topics(settings)
    first, last = min(stamps), max(stamps)
    window = [(t, used) for t, used in sampler.series if first < t <= last + 1]
    seconds = last - first
    answered = len(stamps)
    cpu = {g: sum(used.get(g, 0.0) for _, used in window) for g in GROUPS}
    per_ticket = {g: round(1000 * v / answered, 2) for g, v in cpu.items()}
    total = sum(per_ticket.values())
    report: dict[str, Any] = {
        "tickets": args.tickets, "answered": answered, "seconds": round(seconds, 2),
        "tickets_per_s": round((answered - 1) / seconds, 1) if seconds > 0 else None,
        "cpu_ms_per_ticket": {**per_ticket, "total": round(total, 2)},
        "cores_busy": round(sum(cpu.values()) / max(seconds, 1e-9), 2),
        "cores_needed": {str(rate): round(rate * total / 1000, 2) for rate in (100, 200, 500)},
        "worker_cores_needed_at_500_per_s": round(500 * per_ticket["worker"] / 1000, 2),
        "sim_time_scale": os.environ.get("TICKETFLOW_SIM_TIME_SCALE"),
        "llm_rate_per_s": os.environ.get("TICKETFLOW_LLM_RATE_PER_S"),
        "series": [(round(t - first, 1), {g: round(v, 3) for g, v in used.items()}) for t, used in sampler.series],
    }
    (args.out / "cpu_per_ticket.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "cpu_per_ticket.png")
    print(json.dumps({k: v for k, v in report.items() if k != "series"}, indent=2))
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t for t, _ in report["series"]]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.stackplot(times, *[[used.get(g, 0.0) for _, used in report["series"]] for g in GROUPS],
                 labels=[f"{g} ({report['cpu_ms_per_ticket'][g]} ms/ticket)" for g in GROUPS])
    ax.axhline(os.cpu_count() or 2, color="k", lw=0.8, ls="--", label=f"{os.cpu_count()} cores")
    ax.axvspan(0, report["seconds"], color="grey", alpha=0.1, label="first to last answer")
    ax.set_xlabel("seconds from the first answer")
    ax.set_ylabel("cores")
    ax.set_title(f"One worker draining {report['answered']:,} tickets at {report['tickets_per_s']}/s: "
                 f"{report['cpu_ms_per_ticket']['total']} ms of CPU a ticket", fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
