"""`ticketflow results`: read tickets.responses (or, with ``--replay TAG``, that replay's
answers on tickets.replay.responses) from the beginning (read_committed)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from tqdm import tqdm

from pipeline.client import TicketflowClient
from pipeline.events import TicketResolved, to_record
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("results", help="read tickets.responses")
    parser.add_argument("--json", action="store_true", help="one JSON object per response (JSON Lines)")
    parser.add_argument("--expect", type=int, default=None,
                        help="stop after N distinct tickets (default: read until --timeout)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop after S seconds; exit 1 if fewer than --expect arrived "
                        "(default: 30 without --expect, none with it)")
    parser.add_argument("--replay", metavar="TAG", help="read replay TAG's answers (tickets.replay.responses)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    timeout = args.timeout if args.timeout is not None else (None if args.expect else 30.0)
    client = TicketflowClient(settings)
    distinct: set[str] = set()
    with tqdm(desc="responses", unit="ticket", total=args.expect, file=sys.stderr) as bar:
        for resolved in _answers(client, args.replay, args.expect, timeout):
            if resolved.ticket_id not in distinct:
                distinct.add(resolved.ticket_id)
                bar.update()
            if args.json:
                print(json.dumps(to_record(resolved.for_readers())), flush=True)
            else:
                reason = f" ({resolved.escalation_reason})" if resolved.escalation_reason else ""
                print(f"{resolved.ticket_id}\t{resolved.path}{reason}\t"
                      f"{resolved.end_to_end_ms:.0f} ms\t{resolved.answer[:80]}", flush=True)
    if args.expect is not None and len(distinct) < args.expect:
        print(f"ticketflow: only {len(distinct)} of {args.expect} tickets arrived", file=sys.stderr)
        return 1
    return 0


def _answers(client: TicketflowClient, replay: str | None, expect: int | None,
             timeout: float | None) -> Iterator[TicketResolved]:
    if replay is None:
        for item in client.results(expect=expect, timeout_s=timeout):
            yield item.event
        return
    seen: set[str] = set()
    for resolved in client.replay_results(replay, timeout_s=timeout,
                                          done=lambda: expect is not None and len(seen) >= expect):
        seen.add(resolved.ticket_id)
        yield resolved
