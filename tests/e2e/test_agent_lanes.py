"""Lanes through Kafka: interactive tickets go ahead of a batch backlog at the agent.

An ordering check, not a timing one (speed is `bench/lanes_bench.py`'s): with a backlog of
batch first steps queued on ``agent.steps.batch`` and the batch lane held to 2 steps at a
time, interactive first steps sent afterwards are answered before most of that backlog, and
every answer records how long its step waited before its first LLM call (``agent-start:0``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pytest

from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample
from pipeline.events import TicketResolved, TicketSubmitted
from pipeline.settings import Settings
from processors.router import first_step
from tests.helpers import WorkerProcess

pytestmark = pytest.mark.integration
BACKLOG = 600


def send(client: TicketflowClient, ticket_id: str, lane: Literal["interactive", "batch"], text: str,
         label: str) -> None:
    now = int(time.time() * 1000)
    ticket = TicketSubmitted(ticket_id=ticket_id, tenant_id="acme", body=text, lane=lane, created_at=now,
                             stage_times={"router": now})
    facts: dict[str, object] = {"route": "fallback_agent", "intent": None, "tool_call_cap": 0, "signed_in": False,
                               "entities": {}, "candidates": [label]}
    client.send(f"agent.steps.{lane}", ticket_id, first_step(ticket, "fallback_agent", lane, "cheap", [], "default",
                                                             facts))


def test_interactive_tickets_are_answered_ahead_of_a_batch_backlog(settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    queries = banking77_sample(BACKLOG + 10, seed=5)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_AGENT_BATCH_CONCURRENCY": "2"}
    worker.start()
    resolved: dict[str, TicketResolved] = {}
    try:
        for lane in ("interactive", "batch"):  # both lanes' consumers have joined once these are answered
            send(client, f"warm-{lane}", lane, queries[0].text, queries[0].label)
        client.flush()
        for _ in client.results(expect=2, ticket_ids={"warm-interactive", "warm-batch"}, timeout_s=120):
            pass
        for i, q in enumerate(queries[:BACKLOG]):
            send(client, f"b-{i}", "batch", q.text, q.label)
        client.flush()
        time.sleep(1)  # the backlog is being worked on
        for i, q in enumerate(queries[BACKLOG:BACKLOG + 5]):
            send(client, f"i-{i}", "interactive", q.text, q.label)
        client.flush()
        ids = {f"b-{i}" for i in range(BACKLOG)} | {f"i-{i}" for i in range(5)}
        for item in client.results(expect=len(ids), ticket_ids=ids, timeout_s=300):
            resolved.setdefault(item.event.ticket_id, item.event)
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert len(resolved) == BACKLOG + 5
    batch_done = sorted(r.resolved_at for t, r in resolved.items() if t.startswith("b-"))
    for i in range(5):
        answered = resolved[f"i-{i}"]
        ahead = sum(1 for at in batch_done if at <= answered.resolved_at)
        assert ahead < BACKLOG // 2, f"interactive ticket answered after {ahead} of {BACKLOG} batch tickets"
        assert "agent-start:0" in answered.stage_latency_ms
    assert all("agent-start:0" in r.stage_latency_ms for r in resolved.values())
