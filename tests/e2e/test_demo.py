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
    paths = report["by_path"]
    assert set(paths) <= {"cache", "rule", "tool", "escalated"} and sum(paths.values()) == 200
    # banking77 questions the router has not seen: most are answered by its rules and tools
    # (directly, or from the cache that their answers filled), the rest handed on
    assert paths.get("rule", 0) > 0 and paths.get("tool", 0) > 0
    assert paths.get("rule", 0) + paths.get("tool", 0) + paths.get("cache", 0) >= 80, paths
    # escalated: routes for the agent (none runs yet), or a lookup that found no such record
    reasons = report["escalation_reasons"]
    assert all(r.startswith(("agent_unavailable", "no_route")) or ": NotFound: " in r for r in reasons), reasons
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["llm_calls"] == report["billed_calls"] == 0
    assert "resolved" in result.stderr  # progress went to stderr, the JSON alone to stdout
