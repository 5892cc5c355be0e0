"""Cache feedback: a support desk's verdict on an answer confirms or removes its cache entry.

Reads ``tickets.feedback`` (``CacheFeedback``, written by a support desk or
``ticketflow cache feedback``). The entry concerned is the one a cache hit served
(``cache_entry_id`` of its ``TicketResolved``), or, without one, the entry written from the
ticket's own answer. ``confirm`` makes it trusted (source ``human``); ``reject`` deletes it.
The change reaches every cache replica through ``cache.updates``.
"""

from __future__ import annotations

from pipeline.events import CacheFeedback, CacheUpdate
from pipeline.processing import Clock, Emit, Outcome, Output
from processors.cache_writer import entry_id_of


class CacheFeedbackApplier:
    name = "cache-feedback"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def handle(self, feedback: CacheFeedback, origin: str) -> Outcome:
        entry_id = feedback.cache_entry_id or entry_id_of(feedback.ticket_id, feedback.replay_tag)
        now = self.clock.now_ms()
        if feedback.verdict == "confirm":
            update = CacheUpdate(tenant_id=feedback.tenant_id, op="confirm", created_at=now, entry_id=entry_id,
                                 source="human")
        else:
            update = CacheUpdate(tenant_id=feedback.tenant_id, op="delete", created_at=now, entry_id=entry_id)
        return Emit((Output("cache.updates", feedback.tenant_id, update),))
