"""CLINC150 (Larson et al., 2019; CC BY 3.0) as CSV files (text,label) for the eval commands.

The dataset is not in this repository and cannot be fetched here; with its ``data_full.json``
(github.com/clinc/oos-eval) at hand:

    PYTHONPATH=. .venv/bin/python bench/clinc150_csv.py data_full.json --out /tmp/clinc150
    # a tenant serving the 150 intents, out-of-scope queries mixed in (label "oos"):
    ticketflow cache eval --seed /tmp/clinc150/clinc150_train.csv \
        --queries /tmp/clinc150/clinc150_test.csv --opinion-examples seed
    # a banking tenant (banking77) asked CLINC150's out-of-scope queries:
    ticketflow cache eval --seed bench/data/banking77_tune.csv --queries /tmp/clinc150/clinc150_oos_test.csv

``train`` holds the in-scope training queries (the seed, and the second opinion's examples
with ``--opinion-examples seed``); ``test`` the in-scope test queries and ``oos_test``, whose
label ``oos`` no seed row has, so that every hit on one counts as an out-of-scope hit.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

OOS = "oos"


def tables(data: dict[str, list[list[str]]]) -> dict[str, list[tuple[str, str]]]:
    """The CSV files' rows from the dataset's JSON (lists of [text, label] per split)."""
    def rows(*splits: str) -> list[tuple[str, str]]:
        return [(text, label) for split in splits for text, label in data.get(split, [])]

    missing = [s for s in ("train", "test", "oos_test") if s not in data]
    if missing:
        raise SystemExit(f"not CLINC150's JSON: no {', '.join(missing)} (keys: {', '.join(sorted(data))})")
    return {"clinc150_train": rows("train"), "clinc150_test": rows("test", "oos_test"),
            "clinc150_oos_test": rows("oos_test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="CLINC150's data_full.json (or data_small/imbalanced/oos_plus)")
    parser.add_argument("--out", type=Path, default=Path("bench/data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in tables(json.loads(args.data.read_text(encoding="utf-8"))).items():
        path = args.out / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        print(f"{path}: {len(rows)} rows ({sum(label == OOS for _, label in rows)} out of scope)")


if __name__ == "__main__":
    main()
