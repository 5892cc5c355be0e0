"""`ticketflow services up|down|status`: the local Kafka broker and Redis."""

from __future__ import annotations

import argparse
import json

from pipeline import services
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "services", help="start, stop or check local Kafka and Redis",
        description="Local Kafka (KRaft, from Maven Central jars) and Redis on loopback. "
        "Configured external services (TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS, TICKETFLOW_REDIS_URL) "
        "are only checked, never started.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    action = {"up": services.up, "down": services.down, "status": services.status}[args.action]
    report = action(settings)
    if args.json:
        print(json.dumps({s.name: {"managed": s.managed, "running": s.running,
                                   "address": s.address, "detail": s.detail} for s in report}))
    else:
        for s in report:
            state = "running" if s.running else "stopped"
            kind = "local" if s.managed else "external"
            print(f"{s.name:6} {state:8} {kind:8} {s.address}  {s.detail}")
    if args.action == "down":
        return 0
    return 0 if all(s.running for s in report) else 1
