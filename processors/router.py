"""Router: decide how a ticket that the cache did not answer gets resolved.

Until the deterministic rules (issue 4) and the agent (issue 5) arrive, no route exists,
so every ticket is handed to a human as ``escalated`` with reason ``no_route``. That
branch stays: it is what happens when no rule matches and no agent may take the ticket.
"""

from __future__ import annotations

from pipeline.events import TicketSubmitted
from pipeline.processing import Clock, Emit, Outcome, Output
from processors.escalation import escalate

NO_ROUTE = "no_route"


class Router:
    name = "router"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        resolved = escalate(ticket, NO_ROUTE, self.name, self.clock.now_ms())
        return Emit((Output("tickets.responses", ticket.ticket_id, resolved),))
