"""`ticketflow replay`: re-run a window of tickets.ingress (or a file) through today's pipeline.

``--dry-run`` prices it first (nothing produced, no LLM call, no tool run); without it the
tickets go back in with the replay tag on the batch lane and their answers go to
tickets.replay.responses. The same ``--tag`` again resumes a replay (each ticket once).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.client import TicketflowClient
from pipeline.errors import ValidationFailure
from pipeline.replay import run as replays
from pipeline.replay.dry_run import plan
from pipeline.replay.tags import checked_tag, new_tag
from pipeline.replay.window import parse_time
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings

PATHS = ("cache", "rule", "tool", "agent", "escalated")
#: A third of what one worker's intake, cache and router take (bench/runtime_bench.py: ~300/s).
DEFAULT_RATE = 100.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "replay", help="re-run a window of tickets.ingress (or a file) on the batch lane, priced first",
        description="Selects the original tickets that arrived in [--since, --until) (per partition, by "
        "offsets_for_times) or the tickets of --from-file, and re-runs them with a replay tag on the batch "
        "lane. Answers go to tickets.replay.responses, never to tickets.responses; side-effecting tools "
        "do not run (recorded as would_have_run); the live cache is not written. The same --tag again "
        "resumes the replay: each ticket is replayed and billed once.",
    )
    parser.add_argument("--since", help="ISO time (UTC unless given) or a duration back from now: 2h, 30m, 7d")
    parser.add_argument("--until", help="end of the window, exclusive (default: now)")
    parser.add_argument("--tenant", help="only this tenant's tickets")
    parser.add_argument("--path", choices=PATHS, help="only tickets whose original answer took this path")
    parser.add_argument("--from-file", type=Path, help="a batch job: the tickets of a CSV or JSONL file")
    parser.add_argument("--dry-run", action="store_true", help="estimate paths, cost and time; spend nothing")
    parser.add_argument("--tag", help="the replay's name (default: generated); the same tag resumes it")
    parser.add_argument("--lane", choices=("batch", "interactive"), default="batch")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="tickets per second put back on tickets.ingress (default: %(default)s). Intake, "
                        "cache and router serve tickets in arrival order: a replay submitted at once would "
                        "queue live tickets behind it; 0: no pacing")
    parser.add_argument("--budget", type=float, help="a hard cap in USD on what the replay's LLM calls spend")
    parser.add_argument("--wait", action="store_true", help="block until every replayed ticket is answered")
    parser.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S seconds")
    parser.add_argument("--no-estimate", action="store_true", help="replay without pricing it first")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = TicketflowClient(settings)
    store = replays.Manifests(redis_client(settings), settings.redis_key_prefix())
    tag = checked_tag(args.tag) if args.tag else new_tag()
    manifest = store.get(tag)
    resumed = manifest is not None
    if manifest is None:
        manifest = _manifest(args, tag)
    elif not args.json:
        print(f"replay {tag}: resuming ({manifest.source}, since {manifest.since_ms}, until {manifest.until_ms})",
              file=sys.stderr)
    with tqdm(desc="reading window", unit="ticket", file=sys.stderr, disable=args.json) as bar:
        selection = replays.select(client, manifest, progress=bar.update)
    for warning in selection.window.warnings:
        print(f"ticketflow: warning: {warning}", file=sys.stderr)
    report: dict[str, Any] = {"tag": tag, "resumed": resumed}
    if args.dry_run or not args.no_estimate:
        report.update(_estimate(client, settings, selection, args.json, args.rate or None))
    if args.dry_run:
        report["dry_run"] = True
        _print(report, args.json)
        return 0
    if manifest.budget_micros is not None:
        replays.budgets(settings, store.client).set_cap(tag, manifest.budget_micros)
    if not resumed:
        store.put(manifest)
    started = time.monotonic()
    with tqdm(desc=f"replaying {tag}", unit="ticket", total=len(selection.tickets), file=sys.stderr,
              disable=args.json) as bar:
        report["submitted"] = replays.submit(client, selection.tickets, tag, manifest.lane,  # type: ignore[arg-type]
                                             on_sent=lambda _t: bar.update(), rate_per_s=args.rate or None)
    ids = {t.ticket_id for t in selection.tickets}
    if args.wait:
        timeout = args.timeout if args.timeout is not None else 24 * 3600.0
        with tqdm(desc="answered", unit="ticket", total=len(ids), file=sys.stderr, disable=args.json) as bar:
            got = replays.answers(client, tag, ids, timeout, on_new=lambda _a: bar.update())
        report.update(replays.outcome_report(selection, got, replays.budgets(settings, store.client).scope_spent(tag)))
        report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["results_command"] = f"ticketflow results --replay {tag}"
    _print(report, args.json)
    return 0 if not args.wait or report.get("resolved") == len(ids) else 1


def _manifest(args: argparse.Namespace, tag: str) -> replays.Manifest:
    budget = None if args.budget is None else round(args.budget * 1_000_000)
    if budget is not None and budget < 0:
        raise ValidationFailure("--budget must be at least 0")
    if args.from_file is not None:
        if args.since or args.until:
            raise ValidationFailure("--from-file replays a file: --since and --until do not apply")
        if not args.from_file.exists():
            raise ValidationFailure(f"--from-file {args.from_file}: no such file")
        return replays.Manifest(tag, str(args.from_file.resolve()), tenant=args.tenant, lane=args.lane,
                                budget_micros=budget, created_at=int(time.time() * 1000))
    if not args.since:
        raise ValidationFailure("replay needs --since (a window of tickets.ingress) or --from-file")
    since = parse_time(args.since)
    until = parse_time(args.until) if args.until else None
    if until is not None and until <= since:
        raise ValidationFailure(f"--until ({args.until}) must be after --since ({args.since})")
    return replays.Manifest(tag, "tickets.ingress", since, until, args.tenant, args.path, args.lane, budget,
                            int(time.time() * 1000))


def _estimate(client: TicketflowClient, settings: Settings, selection: replays.Selection,
              quiet: bool, rate: float | None) -> dict[str, Any]:
    with tqdm(desc="dry run (intake, cache, router)", unit="ticket", total=len(selection.tickets),
              file=sys.stderr, disable=quiet) as bar:
        path_plan = plan(client, selection.tickets, "dry-run", progress=bar.update)
    priced = replays.price(settings, path_plan, replays.usage_history(client), selection.answer_keys)
    return {"estimate": replays.dry_run_report(settings, selection, path_plan, priced, rate),
            "estimated_cost_usd": priced.as_json()["estimated_cost_usd"]}


def _print(report: dict[str, Any], as_json: bool) -> None:
    if "estimate" in report and report.get("dry_run"):
        # the dry run's own fields at the top level (tickets, by_path, estimated_cost_usd, ...)
        flat = report.pop("estimate")
        report = {**report, **flat}
    if as_json:
        print(json.dumps(report, sort_keys=True))
        return
    estimate: dict[str, Any] = report.get("estimate", report)
    lines = [f"replay {report['tag']}"]
    if "estimated_cost_band_usd" in estimate:
        lines.append(f"  tickets {estimate['tickets']}; paths today: {estimate['by_path']}")
        lines.append(f"  estimated cost ${estimate['estimated_cost_usd']:.4f} (95 % band "
                     f"${estimate['estimated_cost_band_usd'][0]:.4f}-${estimate['estimated_cost_band_usd'][1]:.4f}, "
                     f"at most ${estimate['max_cost_usd']:.4f}); with the Batch API "
                     f"${estimate['batch_api_cost_usd']:.4f}; about {estimate['estimated_duration_s']:.0f} s "
                     "on the batch lane")
    if "submitted" in report:
        lines.append(f"  submitted {report['submitted']} tickets (tag {report['tag']})")
    if "resolved" in report:
        lines.append(f"  resolved {report['resolved']} of {report['tickets']}, duplicates {report['duplicates']}, "
                     f"paths {report['by_path']}, cost ${report['cost_usd']:.4f}")
        lines.append(f"  changed {report['changed']['count']} of {report['changed']['compared']} compared "
                     f"({report['changed']['key_changed']} with another resolution key); "
                     f"not replayed {report['not_replayed']['count']}")
    if "results_command" in report:
        lines.append(f"  read the answers: {report['results_command']}")
    print("\n".join(lines))
