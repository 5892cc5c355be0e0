"""`ticketflow topics apply`: create the catalog's topics, report drift."""

from __future__ import annotations

import argparse
import json

from pipeline.admin import apply_topics
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("topics", help="create or check every topic of the catalog")
    parser.add_argument("action", choices=["apply"])
    parser.add_argument("--strict", action="store_true", help="exit 1 when an existing topic drifts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    reports = apply_topics(settings)
    if args.json:
        print(json.dumps({r.topic: {"action": r.action, "drift": r.drift} for r in reports}))
    else:
        for r in reports:
            print(f"{r.action:8} {r.topic}" + (f"  ({'; '.join(r.drift)})" if r.drift else ""))
    drifted = any(r.action == "drift" for r in reports)
    return 1 if drifted and args.strict else 0
