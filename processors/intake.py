"""Intake: validate, normalise and de-duplicate submitted tickets.

Input ``tickets.ingress`` (Avro or JSON), output ``tickets.accepted``. A ticket that breaks
a rule becomes a non-retryable Failure (the runtime dead-letters its original bytes); a
ticket id already accepted for the tenant is dropped; the accepted copy carries
``cache_text``, the normalised and PII-redacted text that alone may be cached or logged.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.events import TicketSubmitted
from pipeline.pii import redact
from pipeline.processing import Clock, Emit, Failure, IdempotencyStore, Outcome, Output

TICKET_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# Timestamps before 2000 or more than a day ahead are clock bugs, not tickets.
_EARLIEST_MS = 946_684_800_000
_MAX_SKEW_MS = 24 * 3600 * 1000
MAX_METADATA_ENTRIES = 32
MAX_METADATA_VALUE_BYTES = 1024


@dataclass(frozen=True)
class IntakeLimits:
    """Size limits; ``max_body_bytes`` is set by TICKETFLOW_MAX_BODY_BYTES (64 KiB)."""

    max_body_bytes: int = 64 * 1024
    max_subject_bytes: int = 1024


class Intake:
    name = "intake"

    def __init__(self, idempotency: IdempotencyStore, clock: Clock, limits: IntakeLimits,
                 key_prefix: str = "") -> None:
        self.idempotency = idempotency
        self.clock = clock
        self.limits = limits
        self.key_prefix = key_prefix

    def handle_batch(self, batch: Sequence[tuple[TicketSubmitted, str]]) -> list[Outcome]:
        """Check a batch and claim its valid tickets' ids in one round trip."""
        checked = [self._checked(ticket) for ticket, _ in batch]
        valid = [(self._key(ticket), origin) for (ticket, origin), c in zip(batch, checked, strict=True)
                 if not isinstance(c, Failure)]
        claims = iter(self.idempotency.claim_many(valid) if valid else [])
        return [c if isinstance(c, Failure) else self._accept(ticket, c, next(claims))
                for (ticket, _), c in zip(batch, checked, strict=True)]

    def handle(self, ticket: TicketSubmitted, origin: str) -> Outcome:
        """One ticket (a batch of one)."""
        return self.handle_batch([(ticket, origin)])[0]

    def _accept(self, ticket: TicketSubmitted, checked: tuple[str, str | None], claimed: bool) -> Outcome:
        body, subject = checked
        if not claimed:
            return Emit((), note="duplicate")
        now = self.clock.now_ms()
        text = f"{subject}\n{body}" if subject else body
        accepted = dataclasses.replace(
            ticket,
            body=body,
            subject=subject,
            created_at=ticket.created_at or now,
            cache_text=redact(text),
            stage_times={**ticket.stage_times, "intake": now},
        )
        return Emit((Output("tickets.accepted", ticket.ticket_id, accepted),))

    def _key(self, ticket: TicketSubmitted) -> str:
        return f"{self.key_prefix}idem:{ticket.tenant_id}:{ticket.ticket_id}:{ticket.replay_tag or ''}"

    def _checked(self, ticket: TicketSubmitted) -> Failure | tuple[str, str | None]:
        """The normalised body and subject, or why the ticket is invalid."""
        problem = self._problem(ticket)
        if problem is not None:
            return Failure("InvalidTicket", problem)
        body = normalise(ticket.body)
        if not body:
            return Failure("InvalidTicket", "body is empty after normalisation")
        return body, normalise(ticket.subject) if ticket.subject else None

    def _problem(self, ticket: TicketSubmitted) -> str | None:
        return ticket_problem(ticket, self.limits, self.clock.now_ms())


def ticket_problem(ticket: TicketSubmitted, limits: IntakeLimits, now_ms: int) -> str | None:
    """Why ``ticket`` is invalid (its first problem, naming the field first), or None: intake's
    checks, shared with the HTTP gateway, which answers 422 instead of dead-lettering."""
    if not TICKET_ID.fullmatch(ticket.ticket_id):
        return f"ticket_id {ticket.ticket_id[:40]!r} must be 1-128 characters of [A-Za-z0-9._:-]"
    if not ticket.tenant_id:
        return "tenant_id is missing"
    if not TENANT_ID.fullmatch(ticket.tenant_id):
        return f"tenant_id {ticket.tenant_id[:40]!r} must be 1-64 characters of [A-Za-z0-9._-]"
    body_bytes = len(ticket.body.encode("utf-8", "surrogatepass"))
    if body_bytes > limits.max_body_bytes:
        return f"body is {body_bytes} bytes, over the limit of {limits.max_body_bytes}"
    if ticket.subject and len(ticket.subject.encode("utf-8", "surrogatepass")) > limits.max_subject_bytes:
        return f"subject is over the limit of {limits.max_subject_bytes} bytes"
    if len(ticket.metadata) > MAX_METADATA_ENTRIES:
        return f"metadata has {len(ticket.metadata)} entries, over the limit of {MAX_METADATA_ENTRIES}"
    for name, value in ticket.metadata.items():
        if len(value.encode("utf-8", "surrogatepass")) > MAX_METADATA_VALUE_BYTES:
            return f"metadata {name[:40]!r} is over {MAX_METADATA_VALUE_BYTES} bytes"
    if ticket.created_at is not None and not _EARLIEST_MS <= ticket.created_at <= now_ms + _MAX_SKEW_MS:
        return f"created_at {ticket.created_at} is not a plausible epoch-milliseconds time"
    return None


def normalise(text: str) -> str:
    """NFC, no control characters, single spaces, unix newlines, trimmed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub(" ", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
