"""A side effect and a crash: the tool worker dies after freezing a card but before its
transaction commits; the worker that takes over runs the call again and the card is frozen
once, with one result on tools.results for read_committed readers."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.adapters.sql_bank import TOOL_EFFECTS, SqlBank
from pipeline.client import TicketflowClient
from pipeline.events import ToolCall, ToolInvalidation, ToolResult
from pipeline.settings import Settings
from pipeline.tools.demo_bank import seed_bank
from tests.helpers import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_a_side_effect_survives_a_crash_before_commit_once(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    bank = SqlBank(url)
    seed_bank(bank, ["acme"], customers=5, today=date.today())
    card = bank.card("acme", "C-00002")
    client = TicketflowClient(settings)
    call = ToolCall(call_id="t-7:1:freeze_card", ticket_id="t-7", tenant_id="acme", tool="freeze_card",
                    route="lost_or_stolen_card", reply_to="agent", requested_at=int(time.time() * 1000),
                    arguments=f'{{"customer_id": "C-00002", "card_last4": "{card["card_last4"]}"}}')
    client.send("tools.calls", call.ticket_id, call)
    client.flush()

    crashing = WorkerProcess(settings, tmp_path / "crash.log", "tools")
    crashing.extra_env = {"TICKETFLOW_TOOLS_DATABASE_URL": url, "TICKETFLOW_CRASH_BEFORE_COMMIT": "1"}
    crashing.start()
    assert crashing.proc is not None and crashing.proc.wait(timeout=120) == 137, (tmp_path / "crash.log").read_text()
    assert bank.card("acme", "C-00002", card["card_last4"])["status"] == "frozen"  # applied, not committed

    survivor = WorkerProcess(settings, tmp_path / "worker.log", "tools")
    survivor.extra_env = {"TICKETFLOW_TOOLS_DATABASE_URL": url}
    survivor.start()
    try:
        deadline = time.monotonic() + 90
        while not (results := [r for r in client.events("tools.results", ToolResult) if r.call_id == call.call_id]):
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # anything more would be a duplicate: read to the end again
        results = [r for r in client.events("tools.results", ToolResult) if r.call_id == call.call_id]
        invalidations = [i for i in client.events("tools.invalidations", ToolInvalidation)
                         if i.reason.endswith(call.call_id)]
    finally:
        assert survivor.stop() == 0
    assert len(results) == 1 and results[0].ok, results
    assert '"previous_status": "' + card["status"] + '"' in (results[0].result or "")  # the first run's result
    assert [i.data_source for i in invalidations] == ["cards"]
    with bank.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(TOOL_EFFECTS)).scalar_one() == 1
    bank.close()
