"""JSON egress: every answer on ``tickets.responses`` again on ``tickets.responses.json``, as
one JSON object per record, for users who read Kafka without Avro tooling (kcat, jq, a log
shipper). Opt-in (``TICKETFLOW_JSON_EGRESS=true``, or ``ticketflow worker egress-json``):
it doubles the egress bytes. Exactly once like every processor: the copy commits in the
transaction that consumes the original.
"""

from __future__ import annotations

import dataclasses

from pipeline.events import TicketResolved
from pipeline.processing import Emit, Outcome, Output


class JsonEgress:
    name = "egress-json"

    def handle(self, resolved: TicketResolved, origin: str) -> Outcome:
        # without the cache's embedding: 1.5 KB of float32 is nothing a JSON reader wants
        copy = dataclasses.replace(resolved, embedding=None, embedding_model=None)
        return Emit((Output("tickets.responses.json", resolved.ticket_id, copy),))
