"""How close is a replay's dry-run estimate to what the replay then costs? Rounds of fresh
history, each replayed once, with the estimators side by side.

Each round, on fresh topics and a tenant of its own, with one `ticketflow worker` (all
stages, the simulated provider):

1. history: ``--tickets`` held-out banking77 tickets (a new sample each round) answered as
   production traffic at ``--rate`` per second, so the cache learns from them as it does live;
2. the dry run (intake, cache lookup, router, in this process) picks the tickets that would
   reach the agent today, and each estimator prices them from ``llm.usage``;
3. ``ticketflow replay`` of the window (batch lane), run as a user runs it; its cost is the
   sum of its answers' costs.

Estimators: ``own`` (each ticket's own earlier runs, else its route's mean: the estimate
before this bench), ``group`` (the mean of every run whose ticket's original answer had the
same resolution key, else ``own``: what ``ticketflow replay`` uses now) and ``route`` (the
route's mean). Also reported per round: the agent tickets' own original cost against their
replay cost (the selection effect the ``group`` estimator corrects).

    PYTHONPATH=. .venv/bin/python bench/replay_estimate_bench.py --rounds 4 --out bench/results

Writes ``replay_estimate_bench.json`` and ``replay_estimate_bench.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import services
from pipeline.admin import apply_topics, delete_topics
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.demo import start_workers, stop_workers, warm_up
from pipeline.events import TicketSubmitted
from pipeline.llm.pricing import PricingTable
from pipeline.replay import run as replays
from pipeline.replay.dry_run import plan
from pipeline.replay.estimate import estimate, runs_from_usage
from pipeline.settings import Settings, load_settings


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def one_round(settings: Settings, number: int, tickets: int, rate: float, timeout_s: float) -> dict[str, Any]:
    apply_topics(settings)
    client = TicketflowClient(settings)
    _, held = banking77_split()
    run_id = uuid.uuid4().hex[:6]
    tenant = f"est{number}-{run_id}"
    procs = start_workers(settings, 1, settings.state_dir / "logs")
    try:
        warm_up(client, run_id)
        history = [TicketSubmitted(ticket_id=f"e{number}-{run_id}-{i}", tenant_id=tenant, body=q.text,
                                   customer_id=f"C-{1 + i % 200:05d}")
                   for i, q in enumerate(banking77_sample(tickets, seed=100 + number, rows=held))]
        start = time.time()
        client.submit(history, rate_per_s=rate)
        for got, _ in enumerate(client.results(expect=tickets, ticket_ids={t.ticket_id for t in history},
                                               timeout_s=timeout_s), start=1):
            if got % 250 == 0:
                say(f"round {number}: history {got}/{tickets}")
        end = time.time() + 1.0
        manifest = replays.Manifest("dry", "tickets.ingress", int(start * 1000) - 1000, int(end * 1000), tenant)
        selection = replays.select(client, manifest)
        path_plan = plan(client, selection.tickets, "dry-run")
        usage = replays.usage_history(client)
        runs = runs_from_usage(usage)
        everything = replays.originals(client)
        keys = {t: a.resolution_key or a.path for t, a in everything.items()}
        pricing = PricingTable.load(settings.pricing_file)

        def same(tier: str, recorded: str) -> str:
            return recorded

        estimates = {
            "own": estimate(path_plan.agent, runs, pricing, same).estimated_micros,
            "group": estimate(path_plan.agent, runs, pricing, same, group_of=keys).estimated_micros,
            "averaged": estimate(path_plan.agent, runs, pricing, same, averaged=True).estimated_micros,
            "route": estimate([as_stranger(t) for t in path_plan.agent], runs, pricing, same).estimated_micros,
        }
        shipped = replays.price(settings, path_plan, usage, keys)  # what `ticketflow replay --dry-run` prints
        say(f"round {number}: {len(path_plan.agent)} agent tickets of {len(selection.tickets)}; replaying")
        env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": settings.topic_prefix}
        done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "replay", "--since", iso(start - 1),
                               "--until", iso(end), "--tenant", tenant, "--tag", f"est{number}", "--no-estimate",
                               "--wait", "--json", "--timeout", str(timeout_s)],
                              capture_output=True, text=True, env=env, timeout=timeout_s + 120, check=False)
        report = json.loads(done.stdout) if done.stdout.strip() else {"error": done.stderr[-2000:]}
        answers = {a.ticket_id: a for a in client.replay_results(f"est{number}")}
    finally:
        stop_workers(procs)
        client.close()
        delete_topics(settings)
    actual = round(float(report.get("cost_usd", 0.0)) * 1e6)
    agent_ids = {t.ticket_id for t in path_plan.agent}
    own_original = sum(a.cost_micros for t, a in everything.items() if t in agent_ids)
    replayed_agent = sum(a.cost_micros for t, a in answers.items() if t in agent_ids)
    by_key: dict[str, list[int]] = defaultdict(list)
    for t in agent_ids:
        if t in answers and t in everything:
            by_key[keys[t]].append(answers[t].cost_micros - everything[t].cost_micros)
    return {
        "round": number, "tickets": len(selection.tickets), "agent_tickets": len(agent_ids),
        "by_path_dry_run": dict(path_plan.by_path), "by_path_replay": report.get("by_path"),
        "actual_micros": actual, "estimates_micros": estimates, "shipped_micros": shipped.estimated_micros,
        "shipped_band_micros": [shipped.low_micros, shipped.p95_micros],
        "errors": {k: round(v / actual - 1, 4) if actual else None for k, v in estimates.items()},
        "band_covers_actual": shipped.low_micros <= actual <= shipped.p95_micros,
        "agent_tickets_original_micros": own_original, "agent_tickets_replay_micros": replayed_agent,
        "resolved": report.get("resolved"), "duplicates": report.get("duplicates"),
    }


def as_stranger(ticket: Any) -> Any:
    """The ticket as a stranger to history: priced at its route's mean."""
    import dataclasses

    return dataclasses.replace(ticket, ticket_id=f"unseen:{ticket.ticket_id}")


def plot(rounds: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(rounds[0]["errors"])
    for i, name in enumerate(names):
        values = [100 * r["errors"][name] for r in rounds if r["errors"][name] is not None]
        ax.scatter([i] * len(values), values, label=name)
    ax.axhspan(-20, 20, color="green", alpha=0.1, label="target: within 20 %")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("estimate error, % of the replay's cost")
    ax.set_title(f"Dry-run estimate against the replay, {len(rounds)} fresh histories")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--first-round", type=int, default=1,
                        help="number of the first round (each round's tickets are sampled with its number)")
    parser.add_argument("--tickets", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    base = load_settings()
    services.up(base, adopt=True)
    rounds = []
    for number in range(args.first_round, args.first_round + args.rounds):
        settings = base.model_copy(update={"topic_prefix": f"rest-{uuid.uuid4().hex[:6]}."})
        result = one_round(settings, number, args.tickets, args.rate, args.timeout)
        say(f"round {number}: actual ${result['actual_micros'] / 1e6:.4f}, errors {result['errors']}")
        rounds.append(result)
    errors = {name: [r["errors"][name] for r in rounds if r["errors"][name] is not None]
              for name in rounds[0]["errors"]}
    summary = {name: {"mean": round(float(np.mean(v)), 4), "worst": round(float(max(v, key=abs)), 4),
                      "within_20_pct": sum(abs(x) <= 0.2 for x in v)} for name, v in errors.items() if v}
    summary["band_covers_actual"] = sum(1 for r in rounds if r["band_covers_actual"])  # type: ignore[assignment]
    report = {"rounds": rounds, "summary": summary, "tickets_per_round": args.tickets, "rate_per_s": args.rate}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay_estimate_bench.json").write_text(json.dumps(report, indent=2))
    plot(rounds, args.out / "replay_estimate_bench.png")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
