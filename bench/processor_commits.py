"""Transactions per processor: reads a worker's /metrics twice and prints, per processor,
transactions a second, the mean commit time, records per transaction and handle time per
cycle (the README's "77 transactions a second, 37 of them in processors nobody waits on").

    TICKETFLOW_METRICS_PORT=9464 PYTHONPATH=. .venv/bin/python bench/latency_sweep_bench.py \\
        --rates 100 --out /tmp/sweep &
    sleep 20; PYTHONPATH=. .venv/bin/python bench/processor_commits.py --url http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.request
from collections import defaultdict

_SERIES = re.compile(r'ticketflow_(transaction_seconds|batch_records|handle_seconds)_(count|sum)'
                     r'\{processor="([^"]+)"\} (\S+)')


def scrape(url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    values: dict[tuple[str, str], float] = defaultdict(float)
    for line in text.splitlines():
        if m := _SERIES.match(line):
            values[(m.group(3), f"{m.group(1)}_{m.group(2)}")] = float(m.group(4))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:9464/metrics")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    before, started = scrape(args.url), time.time()
    time.sleep(args.seconds)
    after, elapsed = scrape(args.url), time.time() - started
    total = 0.0
    for processor in sorted({p for p, _ in after}):
        def rate(series: str, p: str = processor) -> float:
            return (after[(p, series)] - before.get((p, series), 0.0)) / elapsed
        commits = rate("transaction_seconds_count")
        if commits <= 0:
            continue
        total += commits
        print(f"{processor:24s} {commits:6.1f} tx/s  commit {1000 * rate('transaction_seconds_sum') / commits:6.1f} ms"
              f"  records/tx {rate('batch_records_sum') / commits:6.1f}"
              f"  handle {1000 * rate('handle_seconds_sum') / commits:7.1f} ms/cycle")
    print(f"all processors: {total:.1f} transactions a second")


if __name__ == "__main__":
    main()
