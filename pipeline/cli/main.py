"""`ticketflow`: the single entry point. Subcommands live in their own modules.

Settings come from TICKETFLOW_* environment variables or the TOML file named by
TICKETFLOW_CONFIG, read once here and passed down.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipeline.cli import (
    cache_cmd,
    demo_cmd,
    dlq_cmd,
    replay_cmd,
    report_cmd,
    results_cmd,
    route_cmd,
    serve_cmd,
    services_cmd,
    submit_cmd,
    tools_cmd,
    topics_cmd,
    worker_cmd,
)
from pipeline.errors import TicketflowError
from pipeline.settings import Settings, load_settings

Runner = Callable[[argparse.Namespace, Settings], int]
MODULES = (services_cmd, topics_cmd, worker_cmd, submit_cmd, results_cmd, replay_cmd, dlq_cmd, cache_cmd, route_cmd,
           tools_cmd, serve_cmd, report_cmd, demo_cmd)

EPILOG = """environment (defaults in brackets):
  TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS  existing Kafka cluster [local broker on 127.0.0.1:9092]
  TICKETFLOW_REDIS_URL                existing Redis [local redis-server on 127.0.0.1:6379]
  TICKETFLOW_SCHEMA_REGISTRY_URL      Confluent framing with schema ids [Avro single-object]
  TICKETFLOW_TOPIC_PREFIX             prefix of every topic and consumer group [none]
  TICKETFLOW_STATE_DIR                local service data, logs, worker slots [.ticketflow]
  TICKETFLOW_COMMIT_INTERVAL_MS       max time to gather one transaction's batch [25]
  TICKETFLOW_MAX_BODY_BYTES           ticket body limit [65536]
  TICKETFLOW_QDRANT_URL               Qdrant server for the cache [embedded Qdrant Edge per worker]
  TICKETFLOW_CACHE_TTL_S              absolute lifetime of a cache entry [604800]
  TICKETFLOW_CACHE_POLICY_FILE        per-tenant hit policies (JSON) [built-in defaults]
  TICKETFLOW_EMBEDDING_BACKEND        onnx-int8, onnx or torch [onnx-int8]
  TICKETFLOW_CONFIG                   TOML file with the same settings (lower case names)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticketflow",
        description="Resolve support tickets through Kafka: cache, rules, tools, then LLM agents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="WARNING",
                        help="logging level on stderr (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        runner: Runner = args.run
        return runner(args, settings)
    except TicketflowError as exc:
        print(f"ticketflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
