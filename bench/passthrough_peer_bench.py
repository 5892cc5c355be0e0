"""The runtime against a peer: the same pass-through (consume ``tickets.ingress``, decode the
Avro record, encode it, produce it) with exactly-once, in ticketflow's runtime and in Quix
Streams, on the same broker, the same records, one process each, one after the other.

For each repeat (the order alternates), N banking77 tickets are pre-loaded on a fresh
ingress; each side drains them into a topic of its own; its rate is the number of outputs
over the span between the first and the last output's produce timestamp (what a
``read_committed`` reader sees; start-up and group joins are outside the span). Reported:
the median and min-max per side, and the ratio of the medians (ticketflow / Quix).

Quix Streams runs in its own virtual environment (``.venv-quix``, made on first use):
quixstreams pins a confluent-kafka older than ticketflow's.

    ./run ticketflow services up
    PYTHONPATH=. .venv/bin/python bench/passthrough_peer_bench.py --records 50000 --repeat 3

Writes ``bench/results/passthrough_peer_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUIX_VENV = ROOT / ".venv-quix"
QUIX_VERSION = "3.28.1"
OUT_TF = "tickets.accepted"  # a catalog topic (the runtime produces only to those), idle on a fresh prefix
OUT_QUIX = "bench.passthrough.out"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve_ticketflow(prefix: str) -> int:
    """The pass-through as a ticketflow processor, run by the runtime's engine until SIGTERM."""
    from bench.serve_binding import serve
    from pipeline.events import TicketSubmitted
    from pipeline.processing import Emit, Output
    from pipeline.runtime.binding import Batch, Binding

    def passthrough(batch: Batch) -> Sequence[Emit]:
        return [Emit([Output(OUT_TF, event.ticket_id, event)]) for event, _ in batch]

    return serve(Binding("bench-passthrough", ("tickets.ingress",), "TicketSubmitted", TicketSubmitted.from_record,
                         handle_batch=passthrough), prefix)


def quix_python() -> Path:
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        say(f"passthrough: creating {QUIX_VENV} with quixstreams=={QUIX_VERSION} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        import fastavro

        subprocess.run([str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}",
                        f"fastavro=={fastavro.__version__}"], check=True)
    return python


def outputs_span(settings: Any, topic: str, n: int, timeout_s: float) -> dict[str, Any]:
    from pipeline.topic_reader import TopicReader

    reader = TopicReader(settings.kafka_common(), f"{settings.topic_prefix}{topic}")
    stamps: list[float] = []
    deadline = time.monotonic() + timeout_s
    while len(stamps) < n and time.monotonic() < deadline:
        stamps.extend(m.timestamp()[1] / 1000 for m in reader.poll(1.0))
    reader.close()
    span = max(stamps) - min(stamps) if len(stamps) > 1 else float("nan")
    return {"outputs": len(stamps), "seconds": round(span, 3), "per_s": round(len(stamps) / span, 1)}


def run_side(side: str, settings: Any, n: int, log: Path, timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": settings.topic_prefix, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        if side == "ticketflow":
            proc = subprocess.Popen([sys.executable, __file__, "--serve-ticketflow", settings.topic_prefix],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            topic = OUT_TF
        else:
            proc = subprocess.Popen([str(quix_python()), str(ROOT / "bench" / "quix_passthrough_app.py"),
                                     settings.topic_prefix, settings.bootstrap_servers(), str(n)],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            topic = OUT_QUIX
        try:
            result = outputs_span(settings, topic, n, timeout_s)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    say(f"passthrough: {side}: {result}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--serve-ticketflow", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ticketflow:
        return serve_ticketflow(args.serve_ticketflow)

    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from pipeline import services
    from pipeline.admin import apply_topics, delete_topics
    from pipeline.client import TicketflowClient
    from pipeline.datasets import banking77_sample
    from pipeline.events import TicketSubmitted
    from pipeline.settings import load_settings

    base = load_settings()
    services.up(base, adopt=True)
    quix_python()
    runs: dict[str, list[dict[str, Any]]] = {"ticketflow": [], "quix": []}
    log = args.out / "logs" / "passthrough_peer_bench.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    queries = banking77_sample(2000, seed=5)
    for repeat in range(args.repeat):
        settings = base.model_copy(update={"topic_prefix": f"ptbench-{uuid.uuid4().hex[:6]}."})
        apply_topics(settings)
        admin = AdminClient(settings.kafka_common())
        partitions = len(admin.list_topics(f"{settings.topic_prefix}tickets.ingress", timeout=10)
                         .topics[f"{settings.topic_prefix}tickets.ingress"].partitions)
        for future in admin.create_topics([NewTopic(f"{settings.topic_prefix}{OUT_QUIX}", partitions, 1)]).values():
            future.result()
        client = TicketflowClient(settings)
        client.submit(TicketSubmitted(ticket_id=f"p-{i}", tenant_id="bench", body=queries[i % len(queries)].text)
                      for i in range(args.records))
        client.close()
        order = ["ticketflow", "quix"] if repeat % 2 == 0 else ["quix", "ticketflow"]
        for side in order:
            runs[side].append(run_side(side, settings, args.records, log, args.timeout))
        admin.delete_topics([f"{settings.topic_prefix}{OUT_QUIX}"])
        delete_topics(settings)
    medians = {side: statistics.median(r["per_s"] for r in rs) for side, rs in runs.items()}
    report = {
        "records": args.records, "repeat": args.repeat, "quixstreams": QUIX_VERSION,
        "per_s": {side: {"median": medians[side], "min": min(r["per_s"] for r in rs),
                         "max": max(r["per_s"] for r in rs), "runs": rs} for side, rs in runs.items()},
        "ratio_ticketflow_to_quix": round(medians["ticketflow"] / medians["quix"], 3),
        "command": "PYTHONPATH=. .venv/bin/python bench/passthrough_peer_bench.py "
                   f"--records {args.records} --repeat {args.repeat}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "passthrough_peer_bench.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("per_s", "ratio_ticketflow_to_quix")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
