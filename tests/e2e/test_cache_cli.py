"""`ticketflow cache eval` and `cache calibrate` as a user runs them: CSV in, JSON (and PNG) out."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from pipeline.datasets import banking77_split

INTENTS = ("card_arrival", "declined_card_payment", "exchange_rate", "lost_or_stolen_card", "top_up_failed",
           "cash_withdrawal_charge", "pin_blocked", "terminate_account")


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def ticketflow(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_cache_eval_reports_the_architecture_fields_and_plots(tmp_path: Path) -> None:
    tune, held = banking77_split()
    seed = write(tmp_path / "seed.csv", [(r.text, r.label) for r in tune if r.label in INTENTS[:6]])
    # two intents the seed does not know: any hit on them is a false hit
    queries = write(tmp_path / "queries.csv", [(r.text, r.label) for r in held if r.label in INTENTS])
    report = ticketflow("cache", "eval", "--seed", str(seed), "--queries", str(queries), "--json",
                        "--plot", str(tmp_path / "eval.png"))
    for name in ("hit_rate", "precision", "false_hit_rate", "p50_ms", "p99_ms", "baseline"):
        assert name in report, name
    baseline = report["baseline"]
    assert isinstance(baseline, dict) and baseline["threshold"] == 0.95
    assert {"hit_rate", "precision", "false_hit_rate"} <= set(baseline)
    assert report["out_of_scope_queries"] == sum(1 for r in held if r.label in INTENTS[6:])
    assert 0 < float(report["hit_rate"]) <= 1 and float(report["precision"]) >= 0.95  # type: ignore[arg-type]
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_calibrate_writes_a_policy_file_the_workers_read(tmp_path: Path) -> None:
    tune, _ = banking77_split()
    labels = write(tmp_path / "labels.csv", [(r.text, r.label) for r in tune if r.label in INTENTS])
    policy_file = tmp_path / "policy.json"
    report = ticketflow("cache", "calibrate", "--labels", str(labels), "--target-precision", "0.98",
                        "--tenant", "acme", "--write", str(policy_file), "--json", "--folds", "3")
    assert float(report["precision"]) >= 0.98  # type: ignore[arg-type]
    written = json.loads(policy_file.read_text())
    assert written["tenants"]["acme"] == report["policy"]

    from pipeline.cache.semantic_cache import PolicyBook

    book = PolicyBook.load(policy_file)
    assert book.for_tenant("acme").to_dict() == report["policy"]
    assert book.for_tenant("other") == book.default


def test_cache_calibrate_second_opinion_picks_the_classifiers_bars(tmp_path: Path) -> None:
    tune, _ = banking77_split()
    labels = write(tmp_path / "labels.csv", [(r.text, r.label) for r in tune if r.label in INTENTS])
    policy_file = tmp_path / "policy.json"
    report = ticketflow("cache", "calibrate", "--labels", str(labels), "--target-precision", "0.98",
                        "--second-opinion", "--write", str(policy_file), "--json", "--folds", "3")
    interval, by_c, policy = report["precision_ci95"], report["by_linear_c"], report["policy"]
    assert isinstance(interval, list) and isinstance(by_c, dict) and isinstance(policy, dict)
    assert interval[0] >= 0.98
    assert set(by_c) == {"3.0", "10.0", "30.0"}
    assert report["router_linear_c"] in (3.0, 10.0, 30.0)
    assert json.loads(policy_file.read_text())["default"] == policy
    assert 0.5 <= policy["router_probability"] < 1
