"""Guarantees 1 and 2 under crashes: kill -9 of workers during a run loses nothing, and a
read_committed reader of the egress sees no duplicate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.client import TicketflowClient
from pipeline.settings import Settings
from tests.helpers import WorkerProcess, dead_letters, records_seen, response_counts, sample_tickets

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TICKETS = 4000
KILL_EVERY_S = 3.0
KILLS = 8


def test_kill9_of_one_of_two_workers_every_few_seconds(settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    tickets = sample_tickets(TICKETS, "k9")
    ids = {t.ticket_id for t in tickets}
    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log").start() for i in range(2)]

    burst = TICKETS // KILLS
    kills = 0
    try:
        while kills < KILLS:
            # A burst, then a kill while both workers are busy with it (in either stage), so
            # that kills land inside open transactions, not between them.
            client.submit(tickets[kills * burst:(kills + 1) * burst])
            time.sleep(0.03 * (1 + kills % 4))
            victim = workers[kills % 2]
            victim.kill9()
            kills += 1
            victim.start()  # the replacement takes the freed slot and fences the dead one
            time.sleep(KILL_EVERY_S)
        counts = response_counts(client, ids, timeout_s=240)
        letters = dead_letters(client)
        # Evidence that kills land mid-transaction: aborted batches stay in the log, visible
        # to read_uncommitted readers only (`pytest -s` prints it; not asserted, it varies).
        for topic in ("tickets.accepted", "tickets.responses"):
            print(f"{topic}: read_uncommitted {records_seen(client, topic, 'read_uncommitted')}, "
                  f"read_committed {records_seen(client, topic, 'read_committed')}, tickets {TICKETS}")
    finally:
        exit_codes = [w.stop() for w in workers]
    assert kills == KILLS
    lost = ids - set(counts)
    assert not lost, f"{len(lost)} tickets lost, e.g. {sorted(lost)[:5]}"
    duplicated = {i: c for i, c in counts.items() if c > 1}
    assert not duplicated, f"duplicates on the egress: {list(duplicated.items())[:5]}"
    assert letters == []
    assert exit_codes == [0, 0]


def test_crash_with_outputs_written_but_not_committed(settings: Settings, tmp_path: Path) -> None:
    """Deterministic twin of the kill -9 test: the worker dies at the worst moment, its
    outputs already in the log and its transaction open (fault injection)."""
    client = TicketflowClient(settings)
    tickets = sample_tickets(600, "cc")
    client.submit(tickets)
    crashing = WorkerProcess(settings, tmp_path / "crashing.log")
    crashing.extra_env = {"TICKETFLOW_CRASH_BEFORE_COMMIT": "2"}
    crashing.start()
    assert crashing.proc is not None
    assert crashing.proc.wait(timeout=120) == 137, (tmp_path / "crashing.log").read_text()[-2000:]
    replacement = WorkerProcess(settings, tmp_path / "replacement.log").start()
    try:
        counts = response_counts(client, {t.ticket_id for t in tickets}, timeout_s=120)
        topics = ("tickets.accepted", "tickets.responses")
        uncommitted = sum(records_seen(client, t, "read_uncommitted") for t in topics)
        committed = sum(records_seen(client, t, "read_committed") for t in topics)
    finally:
        assert replacement.stop() == 0
    assert uncommitted > committed, "the crash left no uncommitted outputs: the test did not test"
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert committed == 2 * 600
