"""`ticketflow demo`: the main job, the whole pipeline on sample tickets with a report."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.demo import DemoOptions, DemoReport, run_demo
from pipeline.errors import ConfigurationError
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo", help="run the whole pipeline on sample tickets and report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Starts local services if needed, applies topics, runs workers, submits "
        "tickets (a seeded banking77 sample, or --input), waits for every response and prints "
        "a report. banking77: Casanueva et al. 2020, CC BY 4.0.",
    )
    parser.add_argument("--input", type=Path, default=None,
                        help="CSV with a 'text' column (optional label, ticket_id, tenant_id)")
    parser.add_argument("--tickets", type=int, default=1000, help="how many tickets")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--malformed", type=int, default=0,
                        help="also submit this many malformed records (they must be dead-lettered)")
    parser.add_argument("--rate", type=float, default=None, help="tickets per second (default: all at once)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for responses")
    parser.add_argument("--seed", type=int, default=7, help="sample seed")
    parser.add_argument("--fault-rate", type=float, default=None, metavar="F",
                        help="share of LLM calls the simulated provider fails (429 with Retry-After, 5xx, timeouts, "
                        "malformed tool calls); default: TICKETFLOW_SIM_FAULT_RATE or 0")
    parser.add_argument("--warm", type=Path, default=None, metavar="SEED_CSV",
                        help="seed the cache with these labelled rows (text,label[,answer]) first; "
                        "otherwise the demo tenants' caches start empty")
    parser.add_argument("--split-background", action="store_true",
                        help="run the cache writer, audit and accounting in one more worker process, apart "
                        "from the customer's path (README, Benchmark)")
    parser.add_argument("--split-agent", action="store_true",
                        help="run the agent in worker processes of its own, apart from intake, cache, router "
                        "and tools")
    parser.add_argument("--nice", type=int, default=0, metavar="N",
                        help="the niceness of the worker processes split off by --split-background and "
                        "--split-agent (0-19): the customer's fast paths get a core first")
    parser.add_argument("--warm-pipeline", type=float, default=0.0, metavar="SECONDS",
                        help="seconds of traffic on a tenant of its own before the run, so that a broker "
                        "just started is measured warm (20 did it here; default 0, the demo says when the "
                        "broker has carried no demo since it started); the run's caches stay empty")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # checked before anything starts (workers, topics, the bank's data)
    if args.fault_rate is not None and not 0 <= args.fault_rate <= 1:
        raise ConfigurationError("--fault-rate must lie in [0, 1]")
    if not 0 <= args.warm_pipeline <= 600:
        raise ConfigurationError("--warm-pipeline must lie in [0, 600] seconds")
    if not 0 <= args.nice <= 19:
        raise ConfigurationError("--nice must lie in [0, 19] (a lower priority for the processes split off)")
    if args.nice and not (args.split_agent or args.split_background):
        raise ConfigurationError("--nice applies to the processes --split-agent and --split-background split off; "
                                 "give one of them")
    report = run_demo(settings, DemoOptions(
        tickets=args.tickets, input_csv=args.input, workers=args.workers,
        malformed=args.malformed, rate=args.rate, timeout_s=args.timeout, seed=args.seed, warm_csv=args.warm,
        fault_rate=args.fault_rate, split_background=args.split_background, split_agent=args.split_agent,
        nice=args.nice, warm_pipeline_s=args.warm_pipeline,
    ))
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(render(report))
    return 0 if report.lost == 0 and report.duplicates == 0 else 1


def render(report: DemoReport) -> str:
    lines = [
        "ticketflow demo",
        f"  submitted      {report.submitted} tickets (+{report.malformed_submitted} malformed records)",
        f"  resolved       {report.resolved}",
        f"  lost           {report.lost}",
        f"  duplicates     {report.duplicates}",
        f"  dead letters   {report.dead_letters}",
        "  by path        " + ", ".join(f"{k}={v}" for k, v in sorted(report.by_path.items())),
    ]
    if report.escalation_reasons:
        # grouped by kind ("agent_unavailable: route x" -> agent_unavailable); --json has each reason
        kinds: Counter[str] = Counter()
        for reason, count in report.escalation_reasons.items():
            kinds[reason.split(":")[0]] += count
        lines.append("  escalated for  " + ", ".join(f"{k}={v}" for k, v in kinds.most_common()))
    lat = report.latency_ms
    lines += [
        f"  latency e2e    p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms",
        *(f"    {path:<12} p50 {v['p50']:.0f} ms, p95 {v['p95']:.0f} ms, p99 {v['p99']:.0f} ms"
          for path, v in report.latency_by_path_ms.items()),
        *([f"  naive loop     p50 {report.naive_latency_ms['p50']:.0f} ms, p95 {report.naive_latency_ms['p95']:.0f} ms "
           "(every ticket through the strong model, from the provider's latency model)"]
          if report.naive_latency_ms else []),
        f"  LLM calls      {report.llm_calls} (billed by the provider: {report.billed_calls})",
        f"  cost           ${report.cost_usd:.4f}, naive agent loop ${report.naive_cost_usd or 0:.4f}"
        + (f" (ratio {report.cost_usd / report.naive_cost_usd:.3f})" if report.naive_cost_usd else ""),
        *([("  right key      " + ", ".join(f"{k} {v:.3f}" for k, v in report.right_key_by_path.items())
             + " (share of labelled answers whose resolution key is the label)")]
          if report.right_key_by_path else []),
        *([_audit_line(report.cache_audit)] if report.cache_audit.get("requested") else []),
        f"  wall time      {report.wall_s} s",
        *([f"  replay next    {report.replay_command}  (with a worker running; drop --dry-run to run it)"]
          if report.replay_command else []),
        "  (Kafka and Redis stay up for `ticketflow results` and the like; "
        "`ticketflow services down` stops them.)",
    ]
    return "\n".join(lines)


def _audit_line(audit: dict[str, Any]) -> str:
    low, high = audit["precision_ci95"]
    return (f"  cache audit    {audit['audited']} hits audited ({audit['share_of_hits']:.0%} of hits), precision "
            f"{audit['precision_estimate']} [95 % {low}, {high}], policy level {audit['policy_level']}, "
            f"cost ${audit['cost_usd']}")
