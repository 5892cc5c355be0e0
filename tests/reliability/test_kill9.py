"""Guarantees 1 and 2 under crashes: kill -9 of workers during a run loses nothing, and a
read_committed reader of the egress sees no duplicate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.client import TicketflowClient
from pipeline.settings import Settings
from tests.helpers import WorkerProcess, dead_letters, response_counts, sample_tickets

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TICKETS = 2000
KILL_EVERY_S = 3.0
KILLS = 8


def test_kill9_of_one_of_two_workers_every_few_seconds(settings: Settings, tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    tickets = sample_tickets(TICKETS, "k9")
    ids = {t.ticket_id for t in tickets}
    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log").start() for i in range(2)]

    def submit_slowly() -> None:
        # ~100 tickets/s, so the kills land while tickets are in flight in both stages.
        for start in range(0, TICKETS, 50):
            client.submit(tickets[start:start + 50])
            time.sleep(0.5)

    submitter = threading.Thread(target=submit_slowly)
    submitter.start()
    kills = 0
    try:
        while kills < KILLS:
            time.sleep(KILL_EVERY_S)
            victim = workers[kills % 2]
            victim.kill9()
            kills += 1
            victim.start()  # the replacement takes the freed slot and fences the dead one
        submitter.join()
        counts = response_counts(client, ids, timeout_s=240)
        letters = dead_letters(client)
    finally:
        submitter.join()
        exit_codes = [w.stop() for w in workers]
    assert kills == KILLS
    lost = ids - set(counts)
    assert not lost, f"{len(lost)} tickets lost, e.g. {sorted(lost)[:5]}"
    duplicated = {i: c for i, c in counts.items() if c > 1}
    assert not duplicated, f"duplicates on the egress: {list(duplicated.items())[:5]}"
    assert letters == []
    assert exit_codes == [0, 0]
