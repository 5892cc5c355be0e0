"""Write our split of the banking77 train set as CSV files (text,label) for the eval commands.

    PYTHONPATH=. .venv/bin/python bench/banking77_split.py --out bench/data
    ticketflow cache eval --seed bench/data/banking77_tune.csv --queries bench/data/banking77_holdout.csv

`tune` (80 % of each intent) is what cache and router parameters are tuned on; `holdout`
(20 %) checks them. The split is `pipeline.datasets.banking77_split()` (seed 7).
`holdout_by_label` is the holdout sorted by label: a stream of topic bursts, every intent's
questions in a row (`demo --input ... --rate 100`, `cache eval --live`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from pipeline.datasets import banking77_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(("tune", "holdout"), banking77_split(), strict=True):
        path = args.out / f"banking77_{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows((r.text, r.label) for r in rows)
        print(f"{path}: {len(rows)} rows")
        if name == "holdout":
            bursts = args.out / "banking77_holdout_by_label.csv"
            with bursts.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "label"])
                writer.writerows((r.text, r.label) for r in sorted(rows, key=lambda r: r.label))
            print(f"{bursts}: {len(rows)} rows, sorted by label")


if __name__ == "__main__":
    main()
