"""The human hand-off: a ticket nothing else can answer is resolved as ``escalated``."""

from __future__ import annotations

from pipeline.events import TicketResolved, TicketSubmitted

HANDOFF_ANSWER = (
    "Thanks for getting in touch. Your request has been passed to a member of our support "
    "team, who will reply to you directly."
)


def stage_latencies(ticket: TicketSubmitted, stage: str, now_ms: int) -> dict[str, float]:
    """Milliseconds each stage added, from ``created_at`` through the stamps to ``now_ms``."""
    start = ticket.created_at if ticket.created_at is not None else now_ms
    latencies: dict[str, float] = {}
    previous = start
    for name, stamp in sorted(ticket.stage_times.items(), key=lambda item: item[1]):
        latencies[name] = float(max(0, stamp - previous))
        previous = stamp
    latencies[stage] = float(max(0, now_ms - previous))
    return latencies


def escalate(ticket: TicketSubmitted, reason: str, stage: str, now_ms: int) -> TicketResolved:
    """Resolve ``ticket`` as handed to a human, with the reason and its latency breakdown."""
    created = ticket.created_at if ticket.created_at is not None else now_ms
    return TicketResolved(
        ticket_id=ticket.ticket_id,
        tenant_id=ticket.tenant_id,
        customer_id=ticket.customer_id,
        lane=ticket.lane,
        answer=HANDOFF_ANSWER,
        path="escalated",
        escalation_reason=reason,
        created_at=created,
        resolved_at=now_ms,
        stage_latency_ms=stage_latencies(ticket, stage, now_ms),
        end_to_end_ms=float(max(0, now_ms - created)),
        replay_tag=ticket.replay_tag,
    )
