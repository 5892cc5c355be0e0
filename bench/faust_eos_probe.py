"""Does faust-streaming's exactly_once hold when workers are killed? The evidence behind
the runtime decision in the README.

Two faust workers run a pass-through agent (``bench/faust_eos_app.py``) from ``in`` to
``out``; while N records flow, one worker is killed with SIGKILL every few seconds and
restarted. A read_committed reader then counts, per key, how often it reached ``out``.
The same scenario for ticketflow's own runtime is tests/reliability/test_kill9.py.

faust-streaming pins click<8.4 and its own aiokafka, so it lives in its own environment:

    python3 -m venv .venv-faust && .venv-faust/bin/pip install -e . faust-streaming
    ./run ticketflow services up
    .venv-faust/bin/python bench/faust_eos_probe.py --records 2000 --kills 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.topic_reader import read_to_end

APP = Path(__file__).resolve().parent / "faust_eos_app.py"


def start(prefix: str, bootstrap: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROBE_PREFIX": prefix, "PROBE_BOOTSTRAP": bootstrap}
    return subprocess.Popen([sys.executable, str(APP), "worker", "-l", "warn", "--without-web"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def read_counts(topic: str, bootstrap: str, isolation: str) -> Counter[bytes]:
    return Counter(m.key() or b"" for m in read_to_end({"bootstrap.servers": bootstrap}, topic, isolation))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--wait", type=float, default=240.0, help="seconds to wait for the output")
    parser.add_argument("--logs", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    prefix = f"probe-{uuid.uuid4().hex[:8]}."
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(f"{prefix}{n}", 6, 1) for n in ("in", "out")]).values():
        future.result(30)
    args.logs.mkdir(parents=True, exist_ok=True)
    workers = [start(prefix, args.bootstrap, args.logs / f"faust-probe-{i}.log") for i in range(2)]
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    time.sleep(10)  # let both workers join before the stream starts
    if any(w.poll() is not None for w in workers):
        raise SystemExit(f"a faust worker exited at start; see {args.logs}/faust-probe-*.log")
    started = time.monotonic()
    sent = kills = 0
    next_kill = started + args.every
    while sent < args.records or kills < args.kills:
        for _ in range(min(50, args.records - sent)):
            producer.produce(f"{prefix}in", key=f"k-{sent}".encode(), value=b"x")
            sent += 1
        producer.poll(0)
        if time.monotonic() >= next_kill and kills < args.kills:
            victim = kills % 2
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = start(prefix, args.bootstrap, args.logs / f"faust-probe-{victim}.log")
            kills += 1
            next_kill += args.every
            print(f"kill {kills}: sent {sent}", file=sys.stderr)
        time.sleep(0.5)
    producer.flush(30)
    deadline = time.monotonic() + args.wait
    counts: Counter[bytes] = Counter()
    while time.monotonic() < deadline:
        counts = read_counts(f"{prefix}out", args.bootstrap, "read_committed")
        print(f"output has {len(counts)}/{args.records} distinct keys", file=sys.stderr)
        if len(counts) >= args.records:
            break
        time.sleep(10)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    report = {
        "records": args.records, "kills": kills,
        "distinct_out": len(counts), "lost": args.records - len(counts),
        "duplicated_keys": sum(1 for c in counts.values() if c > 1),
        "extra_copies": sum(c - 1 for c in counts.values()),
        "topic_prefix": prefix,
    }
    for future in admin.delete_topics([f"{prefix}in", f"{prefix}out"]).values():
        future.result(30)
    print(json.dumps(report))
    (args.logs / "faust_eos_probe.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["lost"] == 0 and report["duplicated_keys"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
