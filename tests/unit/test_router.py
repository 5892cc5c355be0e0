from __future__ import annotations

from pipeline.events import TicketResolved, TicketSubmitted
from pipeline.processing import Emit
from processors.router import Router
from tests.fakes import FixedClock


def test_unanswerable_ticket_is_escalated_with_reason_and_latency_breakdown() -> None:
    clock = FixedClock(1_000_300)
    ticket = TicketSubmitted(ticket_id="t", tenant_id="a", body="hello", customer_id="c",
                             created_at=1_000_000, stage_times={"intake": 1_000_120}, replay_tag="r1")
    outcome = Router(clock).handle(ticket, "o")
    assert isinstance(outcome, Emit)
    [output] = outcome.outputs
    resolved = output.event
    assert isinstance(resolved, TicketResolved)
    assert output.topic == "tickets.responses" and output.key == "t"
    assert resolved.path == "escalated" and resolved.escalation_reason == "no_route"
    assert resolved.answer  # the customer is told a human takes over
    assert resolved.stage_latency_ms == {"intake": 120.0, "router": 180.0}
    assert resolved.end_to_end_ms == 300.0
    assert (resolved.customer_id, resolved.replay_tag, resolved.created_at) == ("c", "r1", 1_000_000)
    assert resolved.cost_micros == 0 and resolved.models == []
