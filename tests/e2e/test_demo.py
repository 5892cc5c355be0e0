"""The main job, as a user runs it: `ticketflow demo --json`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.settings import Settings
from tests.e2e.test_cli import ticketflow

pytestmark = pytest.mark.integration

REQUIRED = {"submitted", "resolved", "lost", "duplicates", "dead_letters", "by_path", "latency_ms",
            "llm_calls", "billed_calls", "cost_usd", "naive_cost_usd", "latency_by_path_ms", "stage_latency_ms",
            "naive_latency_ms", "replay_command"}


def test_demo_json_report(settings: Settings, tmp_path: Path) -> None:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = ticketflow(settings, "demo", "--json", "--tickets", "200", "--malformed", "5", "--workers", "2",
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report) >= REQUIRED
    assert (report["submitted"], report["resolved"], report["lost"], report["duplicates"]) == (200, 200, 0, 0)
    assert report["dead_letters"] == 5
    paths = report["by_path"]
    assert set(paths) <= {"cache", "rule", "tool", "agent", "escalated"} and sum(paths.values()) == 200
    # banking77 questions the router has not seen: rules and tools answer about half, the
    # agent the rest
    assert paths.get("rule", 0) > 0 and paths.get("tool", 0) > 0 and paths.get("agent", 0) > 0
    assert paths.get("rule", 0) + paths.get("tool", 0) + paths.get("cache", 0) >= 80, paths
    # escalated: a lookup that found no such record, or the agent's own hand-offs
    reasons = report["escalation_reasons"]
    assert all(": NotFound: " in r or r.startswith(("invalid_output", "provider_", "budget")) for r in reasons), \
        reasons
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    by_path = report["latency_by_path_ms"]  # every path answered has its percentiles
    assert set(by_path) == set(paths)
    assert all(0 <= v["p50"] <= v["p95"] <= v["p99"] for v in by_path.values())
    assert {"intake", "cache", "router", "agent"} <= set(report["stage_latency_ms"])
    naive = report["naive_latency_ms"]  # the strong model for every ticket, at the provider's full latency
    assert set(naive) == {"p50", "p95"} and 1000 < naive["p50"] <= naive["p95"]
    assert report["llm_calls"] == report["billed_calls"] > 0  # nothing billed twice, nothing unaccounted
    assert 0 < report["cost_usd"] < report["naive_cost_usd"]
    assert "resolved" in result.stderr  # progress went to stderr, the JSON alone to stdout

    # `ticketflow report` over the demo's window reads the same money from pipeline.metrics
    # and llm.usage: the tickets' cost to the micro-dollar, every path, every call.
    plot, table = tmp_path / "report.png", tmp_path / "report.parquet"
    done = ticketflow(settings, "report", "--since", started, "--tenant", "demo", "--json", "--plot", str(plot),
                      "--format", "parquet", "--out", str(table), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    books = json.loads(done.stdout)
    assert books["cost_usd"] == report["cost_usd"]
    assert books["tickets"] == 200 and {p: v["tickets"] for p, v in books["by_path"].items()} == paths
    calls = books["cost_by"]["model"]
    assert sum(m["calls"] for m in calls.values()) == report["llm_calls"] == books["llm_calls"]
    assert books["llm_spend_usd"] == pytest.approx(books["cost_usd"] + books["audit_cost_usd"], abs=2e-6)
    assert set(books["cost_by"]["tenant"]) == {"demo"} and books["deflection_rate"] >= 0.4
    assert 0 < books["latency_ms"]["p50"] <= books["latency_ms"]["p99"] and books["ttft_ms"]
    assert books["budget"]["demo"]["daily_budget_usd"] > 0
    assert plot.stat().st_size > 10_000
    rows = pq.read_table(table).to_pylist()
    assert {r["dimension"] for r in rows} == {"tenant", "workflow", "step", "model", "path"}
    assert sum(r["cost_usd"] for r in rows if r["dimension"] == "path") == pytest.approx(report["cost_usd"], abs=1e-6)


@pytest.mark.parametrize("split", [("--split-background",), ("--split-background", "--split-agent", "--nice", "5")],
                         ids=["background", "background-agent-niced"])
def test_demo_with_the_background_processors_in_a_worker_of_their_own(settings: Settings,
                                                                      split: tuple[str, ...]) -> None:
    """``--split-background``: the customer's path in one process, the cache writer, audit and
    accounting in another (with ``--split-agent`` the agent in a third, both at niceness 5);
    every ticket answered once, and the accounting (only in the background process) books the
    tickets' cost as the customer's path reported it."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = ticketflow(settings, "demo", "--json", "--tickets", "60", *split, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["submitted"], report["resolved"], report["lost"], report["duplicates"]) == (60, 60, 0, 0)
    done = ticketflow(settings, "report", "--since", started, "--tenant", "demo", "--json", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    books = json.loads(done.stdout)
    assert books["tickets"] == 60 and books["cost_usd"] == report["cost_usd"]
