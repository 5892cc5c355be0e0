"""The demo report's latency figures: percentiles per stage over the tickets that went through it."""

from __future__ import annotations

from pipeline.demo import percentiles, stage_percentiles


def test_a_stage_counts_only_its_tickets_and_an_agents_steps_add_up() -> None:
    tickets = [{"intake": 5.0, "cache": 20.0, "router": 10.0, "agent-start:0": 100.0, "agent:0": 500.0,
                "agent-start:1": 50.0, "agent:1": 700.0},
               {"intake": 7.0, "cache": 30.0}]
    stages = stage_percentiles(tickets)
    assert stages["agent"] == {"p50": 1200.0, "p95": 1200.0, "p99": 1200.0}  # 500 + 700, one ticket
    assert stages["agent-start"]["p50"] == 150.0
    assert stages["cache"]["p50"] == 20.0 and stages["cache"]["p99"] == 30.0
    assert set(stages) == {"intake", "cache", "router", "agent-start", "agent"}
    assert percentiles([], (50,)) == {"p50": 0.0}
