"""`ticketflow dlq list|redrive`: inspect dead letters; send them back after a fix."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter

import redis

from pipeline.client import TicketflowClient
from pipeline.events import DeadLetter
from pipeline.redrive import matching, position, redrive
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "dlq", help="list dead letters, or redrive them to their source topic",
        description="`list` shows each dead letter's source, processor and reason; `redrive` "
        "produces the original bytes again to the source topic, once per dead letter.",
    )
    parser.add_argument("action", choices=["list", "redrive"])
    parser.add_argument("--processor", default=None, help="only dead letters of this processor")
    parser.add_argument("--error-class", default=None, help="only dead letters of this error class")
    parser.add_argument("--dry-run", action="store_true", help="redrive: count, send nothing")
    parser.add_argument("--force", action="store_true", help="redrive: also those redriven before")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = TicketflowClient(settings)
    if args.action == "redrive":
        store = redis.Redis.from_url(settings.redis_location())
        report = redrive(client, store, processor=args.processor, error_class=args.error_class,
                         dry_run=args.dry_run, force=args.force)
        if args.json:
            print(json.dumps(dataclasses.asdict(report)))
        else:
            verb = "would redrive" if args.dry_run else "redrove"
            print(f"{report.matched} dead letters matched; {verb} "
                  f"{report.matched - report.already_redriven if args.dry_run else report.redriven}; "
                  f"{report.already_redriven} were redriven before")
        return 0
    letters: list[DeadLetter] = matching([r.event for r in client.dead_letters(timeout_s=30)],
                                         args.processor, args.error_class)
    if args.json:
        print(json.dumps({
            "count": len(letters),
            "by_error_class": dict(Counter(d.error_class for d in letters)),
            "dead_letters": [{"source": position(d), "processor": d.processor, "error_class": d.error_class,
                              "error_message": d.error_message[:500], "retryable": d.retryable,
                              "key": (d.key or b"").decode(errors="replace"),
                              "value_bytes": len(d.value or b"")} for d in letters],
        }))
    else:
        for d in letters:
            print(f"{position(d)}\t{d.processor}\t{d.error_class}\t{d.error_message[:120]}")
        print(f"{len(letters)} dead letters", flush=True)
    return 0
