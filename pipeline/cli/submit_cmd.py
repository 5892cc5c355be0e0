"""`ticketflow submit FILE|-`: produce tickets from CSV or JSON Lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.client import TicketflowClient
from pipeline.settings import Settings
from pipeline.ticket_files import read_tickets


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "submit", help="produce tickets from CSV (text[,tenant_id,...]) or JSONL",
        description="CSV needs a 'text' column; optional ticket_id, tenant_id, customer_id, "
        "subject, lane, channel, locale, priority; other columns become metadata. JSONL lines "
        "are TicketSubmitted objects ('text' may stand for 'body'). Missing ticket ids are "
        "generated; the tenant defaults to 'default'.",
    )
    parser.add_argument("file", help="path, or - for standard input")
    parser.add_argument("--lane", choices=["interactive", "batch"], default=None,
                        help="override every ticket's lane (default: per row, else interactive)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = TicketflowClient(settings)
    stream = sys.stdin if args.file == "-" else Path(args.file).open(encoding="utf-8")  # noqa: SIM115
    with stream, tqdm(desc="submitted", unit="ticket", file=sys.stderr) as bar:
        count = client.submit(read_tickets(stream, args.lane), on_sent=lambda _t: bar.update())
    print(f"submitted {count} tickets to {client.topic('tickets.ingress')}", file=sys.stderr)
    return 0
