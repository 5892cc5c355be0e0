"""`ticketflow worker [PROCESSOR ...]`: run processors until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse

from pipeline.runtime.topology import OPT_IN, PROCESSORS
from pipeline.runtime.worker import run_worker
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "worker", help="run stream processors (all by default)",
        description="Each processor is its own consumer group; run more processes to add "
        f"consumers. Processors: {', '.join(PROCESSORS)} (opt-in, run only when named or switched on: "
        f"{', '.join(f'{n} by TICKETFLOW_{s.upper()}=true' for n, s in OPT_IN.items())}).",
    )
    parser.add_argument("processors", nargs="*", metavar="PROCESSOR",
                        help="processors to run (default: all but the opt-in ones)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_worker(settings, args.processors or None)
