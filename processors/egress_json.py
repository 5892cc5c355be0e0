"""JSON egress: every answer on ``tickets.responses`` again on ``tickets.responses.json``, as
one JSON object per record, for users who read Kafka without Avro tooling (kcat, jq, a log
shipper). Opt-in (``TICKETFLOW_JSON_EGRESS=true``, or ``ticketflow worker egress-json``):
it doubles the egress bytes. Exactly once like every processor: the copy commits in the
transaction that consumes the original.
"""

from __future__ import annotations

from pipeline.events import TicketResolved
from pipeline.processing import Emit, Outcome, Output


class JsonEgress:
    name = "egress-json"

    def handle(self, resolved: TicketResolved, origin: str) -> Outcome:
        return Emit((Output("tickets.responses.json", resolved.ticket_id, resolved.for_readers()),))
