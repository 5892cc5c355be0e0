"""`ticketflow report`: cost, tokens and calls per tenant, workflow, step, model and path;
deflection; latency and TTFT; cache hit rate and audit precision; budget use. Read from
pipeline.metrics and llm.usage (see pipeline/report.py)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.client import TicketflowClient
from pipeline.errors import ValidationFailure
from pipeline.replay.window import parse_time
from pipeline.report import read, summarise, table
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("report", help="cost, deflection, latency and budget use over a time window")
    parser.add_argument("--since", default="24h", help="ISO time (UTC unless given) or a duration back from now: "
                        "2h, 30m, 7d (default 24h)")
    parser.add_argument("--until", help="ISO time or duration back from now (default: now)")
    parser.add_argument("--tenant", help="one tenant (default: all)")
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write a one-page summary plot")
    parser.add_argument("--format", choices=("csv", "parquet"), help="write the cost table (dimension, key, "
                        "tickets, calls, tokens, cost) to --out for analysts")
    parser.add_argument("--out", type=Path, help="file for --format")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    since = parse_time(args.since)
    until = parse_time(args.until) if args.until else int(time.time() * 1000)
    if until <= since:
        raise ValidationFailure(f"--until ({args.until}) must be after --since ({args.since})")
    if args.format and not args.out:
        raise ValidationFailure("--format needs --out FILE")
    print("report: reading pipeline.metrics and llm.usage...", file=sys.stderr)
    report = summarise(read(TicketflowClient(settings), since, until, args.tenant), since, until, args.tenant)
    if args.plot:
        from pipeline.report_plot import plot

        plot(report, args.plot)
        print(f"report: plot written to {args.plot}", file=sys.stderr)
    if args.format:
        write_table(table(report), args.format, args.out)
        print(f"report: {args.format} table written to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(text(report))
    return 0


def write_table(rows: list[dict[str, Any]], fmt: str, out: Path) -> None:
    if fmt == "csv":
        with out.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["dimension", "key"])
            writer.writeheader()
            writer.writerows(rows)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), out)


def text(report: dict[str, Any]) -> str:
    who = report["tenant"] or "all tenants"
    deflection = report["deflection_rate"]
    lines = [f"{who}, {report['since']} to {report['until']}",
             f"  tickets {report['tickets']:,}, cost ${report['cost_usd']:.6f} "
             f"(${report['cost_per_ticket_usd']:.6f} a ticket); LLM spend incl. audit and replays "
             f"${report['llm_spend_usd']:.6f}",
             f"  answered without the agent: {'-' if deflection is None else f'{100 * deflection:.1f} %'}; "
             f"latency p50 {report['latency_ms'].get('p50', 0):.0f} ms, "
             f"p95 {report['latency_ms'].get('p95', 0):.0f} ms",
             "  by path:"]
    for path, p in report["by_path"].items():
        lines.append(f"    {path:<10} {p['tickets']:>7,} ({100 * p['share']:4.1f} %)  ${p['cost_usd']:.6f}  "
                     f"p50 {p['latency_ms'].get('p50', 0):.0f} ms, p95 {p['latency_ms'].get('p95', 0):.0f} ms")
    for dimension in ("workflow", "model"):
        lines.append(f"  cost by {dimension} (top 8):")
        for key, g in list(report["cost_by"][dimension].items())[:8]:
            lines.append(f"    {key:<40} {g['calls']:>6} calls  ${g['cost_usd']:.6f}")
    for tenant, a in report["cache"]["audit"].items():
        lines.append(f"  cache audit {tenant}: {a['audited']} audited, precision {a['precision_estimate']:.4f} "
                     f"[{a['precision_ci95'][0]:.4f}, {a['precision_ci95'][1]:.4f}]")
    for tenant, b in report["budget"].items():
        for day, d in b["by_day"].items():
            used = "-" if d["used"] is None else f"{100 * d['used']:.2f} %"
            lines.append(f"  budget {tenant} {day}: ${d['spent_usd']:.6f} spent, {used} of the daily budget")
    return "\n".join(lines)
