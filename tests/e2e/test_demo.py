"""The main job, as a user runs it: `ticketflow demo --json`."""

from __future__ import annotations

import json

import pytest

from pipeline.settings import Settings
from tests.e2e.test_cli import ticketflow

pytestmark = pytest.mark.integration

REQUIRED = {"submitted", "resolved", "lost", "duplicates", "dead_letters", "by_path", "latency_ms",
            "llm_calls", "billed_calls", "cost_usd", "naive_cost_usd"}


def test_demo_json_report(settings: Settings) -> None:
    result = ticketflow(settings, "demo", "--json", "--tickets", "200", "--malformed", "5", "--workers", "2",
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report) >= REQUIRED
    assert (report["submitted"], report["resolved"], report["lost"], report["duplicates"]) == (200, 200, 0, 0)
    assert report["dead_letters"] == 5
    assert report["by_path"] == {"escalated": 200}
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["llm_calls"] == report["billed_calls"] == 0
    assert "resolved" in result.stderr  # progress went to stderr, the JSON alone to stdout
