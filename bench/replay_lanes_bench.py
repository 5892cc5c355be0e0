"""A 5,000-ticket replay on the batch lane while interactive tickets flow: do they still
start within a second?

One `ticketflow worker` (all stages; the simulated provider at its real latency) on fresh
topics. In order:

1. history: 5,000 banking77 tickets (tenant ``backfill``) answered as production traffic;
2. a knowledge-base change (``cache kb-version --set 2``): no cached answer is served again,
   so the replay re-answers everything through rules, tools and the agent (the demanding
   case: the reason teams replay);
3. ``ticketflow replay`` of that window (tag ``bench``, batch lane), run as a user runs it,
   while interactive tickets of another tenant arrive at ``--rate`` per second.

Reported: the interactive tickets' wait before their first LLM call
(``stage_latency_ms["agent-start:0"]``, the quantity of ``ticketflow_agent_step_wait_seconds``;
target p95 < 1 s) and their end-to-end latency per path, the batch lane's progress, and the
replay's own report (cost, duplicates).

    PYTHONPATH=. .venv/bin/python bench/replay_lanes_bench.py --out bench/results

Writes ``replay_lanes_bench.json`` and ``replay_lanes_bench.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.lanes_bench import stats, waits_panel
from pipeline import services
from pipeline.admin import apply_topics, delete_topics
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.demo import start_workers, stop_workers, warm_up
from pipeline.events import TicketResolved, TicketSubmitted
from pipeline.settings import Settings, load_settings


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cli(settings: Settings, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": settings.topic_prefix}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run(settings: Settings, tickets: int, interactive: int, rate: float, timeout_s: float) -> dict[str, Any]:
    services.up(settings, adopt=True)
    apply_topics(settings)
    client = TicketflowClient(settings)
    train, held = banking77_split()
    run_id = uuid.uuid4().hex[:8]
    procs = start_workers(settings, 1, settings.state_dir / "logs")
    live: dict[str, TicketResolved] = {}
    arrived: dict[str, float] = {}
    try:
        say("replay-lanes: waiting for the worker to join...")
        warm_up(client, run_id)
        history = [TicketSubmitted(ticket_id=f"h-{run_id}-{i}", tenant_id="backfill", body=q.text,
                                   customer_id=f"C-{1 + i % 200:05d}")
                   for i, q in enumerate(banking77_sample(tickets, seed=5, rows=train))]
        start = time.time()
        client.submit(history)
        end = time.time() + 1.0
        for got, _ in enumerate(client.results(expect=tickets, ticket_ids={t.ticket_id for t in history},
                                               timeout_s=timeout_s), start=1):
            if got % 500 == 0:
                say(f"replay-lanes: history {got}/{tickets}")
        history_s = time.time() - start
        say(f"replay-lanes: history answered in {history_s:.0f} s; knowledge base changes (kb-version 2)")
        done = cli(settings, "cache", "kb-version", "--tenant", "backfill", "--set", "2")
        assert done.returncode == 0, done.stderr

        ids = {f"i-{run_id}-{i}" for i in range(interactive)}

        sending_done = threading.Event()
        sent_at: dict[str, float] = {}

        def collect() -> None:
            for item in client.results(ticket_ids=ids, timeout_s=timeout_s):
                if item.event.ticket_id not in live:
                    live[item.event.ticket_id] = item.event
                    arrived[item.event.ticket_id] = time.time()
                if sending_done.is_set() and set(sent_at) <= set(live):
                    return

        say("replay-lanes: dry run of the window")
        dry = cli(settings, "replay", "--since", iso(start), "--until", iso(end), "--tenant", "backfill",
                  "--dry-run", "--json")
        estimate: dict[str, Any] = json.loads(dry.stdout) if dry.returncode == 0 else {"error": dry.stderr[-2000:]}
        replay_report: dict[str, Any] = {}

        def replay() -> None:
            done = cli(settings, "replay", "--since", iso(start), "--until", iso(end), "--tenant", "backfill",
                       "--tag", "bench", "--no-estimate", "--wait", "--json", "--timeout", str(timeout_s))
            replay_report.update(json.loads(done.stdout) if done.stdout.strip() else {"error": done.stderr[-2000:]})

        replaying = threading.Thread(target=replay, daemon=True)
        replay_started = time.time()
        replaying.start()
        # Interactive tickets from the replay's first answer until its last (at most ``interactive``).
        while not any(True for _ in client.replay_results("bench")) and replaying.is_alive():
            time.sleep(0.2)
        say(f"replay-lanes: replay answering after {time.time() - replay_started:.1f} s; interactive at {rate}/s")
        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        first_sent = time.time()
        for i in range(interactive):
            if not replaying.is_alive():
                break
            query = held[(i * 7 + 3) % len(held)]
            ticket = TicketSubmitted(ticket_id=f"i-{run_id}-{i}", tenant_id="live", body=query.text,
                                     customer_id=f"C-{1 + i % 200:05d}")
            client.submit([ticket], flush=False)
            sent_at[ticket.ticket_id] = time.time()
            time.sleep(1 / rate)
        client.flush()
        sending_done.set()
        reader.join(timeout=timeout_s)
        say(f"replay-lanes: interactive answered {len(live)}/{len(sent_at)}; waiting for the replay")
        replaying.join(timeout=timeout_s)
        replay_s = time.time() - replay_started
        timeline = sorted(a.resolved_at / 1000 - replay_started
                          for a in client.replay_results("bench"))
    finally:
        stop_workers(procs)
        client.close()
        delete_topics(settings)

    agent = [t for t in live.values() if t.path in ("agent", "escalated") and "agent-start:0" in t.stage_latency_ms]
    by_path: dict[str, list[float]] = {}
    for ticket_id, answer in live.items():
        by_path.setdefault(answer.path, []).append((arrived[ticket_id] - sent_at[ticket_id]) * 1000)
    return {
        "history_tickets": tickets, "history_s": round(history_s, 1),
        "interactive_tickets": interactive, "interactive_rate_per_s": rate,
        "interactive_wait": stats([t.stage_latency_ms["agent-start:0"] for t in agent]),
        "interactive_end_to_end_by_path": {p: stats(v) for p, v in sorted(by_path.items())},
        "replay": {k: replay_report.get(k) for k in ("tickets", "resolved", "duplicates", "by_path", "cost_usd",
                                                       "estimated_cost_usd", "elapsed_s")},
        "replay_estimate": {k: estimate.get(k) for k in ("by_path", "estimated_cost_usd", "estimated_cost_p95_usd",
                                                         "max_cost_usd", "estimated_duration_s")},
        "replay_s": round(replay_s, 1),
        "replay_timeline_s": [round(x, 2) for x in timeline[:: max(1, len(timeline) // 200)]],
        "interactive_waits_ms": sorted(t.stage_latency_ms["agent-start:0"] for t in agent),
        "interactive_window_s": [round(first_sent - replay_started, 1),
                                 round(max(sent_at.values()) - replay_started, 1) if sent_at else 0],
        "interactive_sent": len(sent_at),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    waits_panel(left, report["interactive_waits_ms"], "interactive agent tickets",
                f"Interactive waits during a {report['history_tickets']:,}-ticket replay")
    timeline = report["replay_timeline_s"]
    right.plot(timeline, np.linspace(0, report["replay"]["resolved"] or 0, len(timeline)))
    right.axvspan(*report["interactive_window_s"], color="orange", alpha=0.2, label="interactive arriving")
    right.set_xlabel("seconds since `ticketflow replay` started")
    right.set_ylabel("replayed tickets answered")
    right.set_title("The replay on the batch lane")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--tickets", type=int, default=5000)
    parser.add_argument("--interactive", type=int, default=2000, help="at most this many, while the replay runs")
    parser.add_argument("--rate", type=float, default=10.0, help="interactive tickets per second")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    base = load_settings()
    settings = base.model_copy(update={"topic_prefix": f"rlanes-{uuid.uuid4().hex[:6]}."})
    report = run(settings, args.tickets, args.interactive, args.rate, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay_lanes_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "replay_lanes_bench.png")
    print(json.dumps({k: v for k, v in report.items() if k not in ("replay_timeline_s", "interactive_waits_ms")},
                     indent=2))
    target = report["interactive_wait"]["p95_ms"] < 1000
    print(f"interactive wait p95 {report['interactive_wait']['p95_ms']:.0f} ms: "
          f"{'within' if target else 'OVER'} the 1 s target")
    return 0 if target else 1


if __name__ == "__main__":
    sys.exit(main())
