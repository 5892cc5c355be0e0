"""Which processes take the CPU while something runs: each process's share of one core, for
consecutive windows (the README's "the two cores are 82-85 % busy: the worker ..., the
broker ..." figures). Start it beside a benchmark:

    PYTHONPATH=. .venv/bin/python bench/cpu_shares.py --windows 6 --seconds 5 &
    PYTHONPATH=. .venv/bin/python bench/latency_sweep_bench.py --rates 100 --out /tmp/sweep
"""

from __future__ import annotations

import argparse

from bench.procstat import cpu_shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args()
    for window in range(args.windows):
        shares = cpu_shares(args.seconds)
        print(f"window {window + 1}: {100 * sum(s for s, _, _ in shares):.0f} % of a core in all", flush=True)
        for share, pid, name in shares[:args.top]:
            print(f"  {100 * share:5.1f} %  {pid:7d}  {name}", flush=True)


if __name__ == "__main__":
    main()
