"""Where does one worker's time go? Pre-loads held-out tickets, starts one worker (every
processor, transactions on), and once it is answering, records it with py-spy (on-CPU
samples, every thread) while it drains. Prints the functions with the most samples, inclusive
and by leaf, and the drain rate; writes the collapsed stacks for a flame graph.

    ./run ticketflow services up
    .venv/bin/pip install py-spy          # not a project dependency
    PYTHONPATH=. .venv/bin/python bench/profile_pipeline.py --tickets 3000 --seconds 30

``--rate 100`` sends the tickets at a steady rate instead (a live stream, as the latency
sweep does, after a 50-ticket warm-up), and ``--idle`` keeps the samples of threads that
wait (in ``consume``, a commit, a lock): where each thread's wall time goes, not only its CPU.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.procstat import cpu_seconds
from bench.runtime_bench import fresh, tickets
from pipeline.admin import delete_topics
from pipeline.client import TicketflowClient
from pipeline.settings import load_settings
from pipeline.topic_reader import TopicReader
from tests.helpers import WorkerProcess


def summarise(collapsed: Path, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        leaf[frames[-1]] += n
        for f in set(frames[1:]):
            inclusive[f] += n
    print(f"{total} samples")
    for title, counter in (("threads", threads), ("inclusive", inclusive), ("leaf", leaf)):
        print(f"--- {title}")
        for name, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {name[:160]}")




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ticketflow-profile"))
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--idle", action="store_true", help="keep samples of waiting threads too")
    parser.add_argument("--rate", type=float, help="tickets a second, sent while recording (default: pre-loaded)")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out.mkdir(parents=True, exist_ok=True)
    settings = fresh(load_settings())
    load = tickets(args.tickets, "prof")
    client = TicketflowClient(settings)
    if args.rate:  # a warm-up, then the rest at a steady rate from a thread
        client.submit(load[:50])
        paced = threading.Thread(target=client.submit, args=(load[50:],), kwargs={"rate_per_s": args.rate},
                                 daemon=True)
    else:
        client.submit(load)
    worker = WorkerProcess(settings, args.out / "worker.log").start()
    reader = TopicReader(settings.kafka_common(), f"{settings.topic_prefix}tickets.responses")
    seen: list[float] = []
    try:
        while len(seen) < (50 if args.rate else 100):
            seen.extend(m.timestamp()[1] / 1000 for m in reader.poll(1.0))
        if args.rate:
            paced.start()
        assert worker.proc is not None
        collapsed = args.out / "worker.collapsed"
        cmd = [pyspy, "record", "--pid", str(worker.proc.pid), "--duration", str(args.seconds), "--rate", "200",
               "--format", "raw", "--threads", "--nonblocking", "-o", str(collapsed)]
        cmd += (["--gil"] if args.gil else []) + (["--idle"] if args.idle else [])
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.time()
        cpu_before = cpu_seconds(worker.proc.pid)
        before = len(seen)
        while spy.poll() is None:
            seen.extend(m.timestamp()[1] / 1000 for m in reader.poll(0.5))
        elapsed = time.time() - start
        rate = (len(seen) - before) / elapsed
        cores = (cpu_seconds(worker.proc.pid) - cpu_before) / elapsed
        print(f"answered {len(seen)} of {args.tickets}; {rate:.1f} tickets/s while recorded; the worker used "
              f"{100 * cores:.0f} % of a core (py-spy's own sampling included)")
        summarise(collapsed, args.top)
    finally:
        reader.close()
        worker.stop()
        delete_topics(settings)  # left-over topics slowed the local broker down (README, Benchmark)
    return 0


if __name__ == "__main__":
    sys.exit(main())
