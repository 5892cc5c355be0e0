"""Reading tickets from CSV or JSON Lines, as `ticketflow submit` and the demo do."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any, TextIO

from pipeline.errors import ValidationFailure
from pipeline.events import LANES, TicketSubmitted

#: CSV columns that map to TicketSubmitted fields; any other column goes to ``metadata``.
CSV_FIELDS = {"text", "body", "ticket_id", "tenant_id", "customer_id", "subject", "lane",
              "channel", "locale", "priority"}
DEFAULT_TENANT = "default"


def read_tickets(stream: TextIO, lane: str | None = None, id_prefix: str | None = None) -> Iterator[TicketSubmitted]:
    """Tickets from CSV (a ``text`` column) or JSONL (objects), told apart by the first byte.
    A row without a ``ticket_id`` gets a random one, or ``<id_prefix>-<line>`` (the same on
    every read of the file: a batch job that runs again is the same tickets)."""
    head = stream.read(1)
    rest = io.StringIO(head + stream.read()) if head else io.StringIO("")
    rows = _jsonl(rest) if head in ("{", "[") else _csv(rest)
    for line, row in rows:
        yield _ticket(row, line, lane, id_prefix)


def _csv(stream: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(stream)
    if reader.fieldnames is None or not ({"text", "body"} & set(reader.fieldnames)):
        raise ValidationFailure("CSV input needs a header with a 'text' column")
    for number, row in enumerate(reader, start=2):
        yield number, {k: v for k, v in row.items() if k is not None and v not in (None, "")}


def _jsonl(stream: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationFailure(f"line {number}: invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ValidationFailure(f"line {number}: expected a JSON object")
        yield number, obj


def _ticket(row: dict[str, Any], line: int, lane: str | None, id_prefix: str | None) -> TicketSubmitted:
    body = row.get("body", row.get("text"))
    if not isinstance(body, str) or not body.strip():
        raise ValidationFailure(f"line {line}: no text")
    chosen_lane = lane or row.get("lane", "interactive")
    if chosen_lane not in LANES:
        raise ValidationFailure(f"line {line}: lane must be one of {LANES}, got {chosen_lane!r}")
    metadata = {str(k): str(v) for k, v in row.get("metadata", {}).items()}
    metadata.update({k: str(v) for k, v in row.items() if k not in CSV_FIELDS | {"metadata", "created_at"}})
    try:
        priority = int(row.get("priority", 0))
    except ValueError as exc:
        raise ValidationFailure(f"line {line}: priority must be an integer") from exc
    return TicketSubmitted(
        ticket_id=str(row.get("ticket_id") or (f"{id_prefix}-{line}" if id_prefix else f"t-{uuid.uuid4().hex}")),
        tenant_id=str(row.get("tenant_id") or DEFAULT_TENANT),
        customer_id=row.get("customer_id"),
        subject=row.get("subject"),
        body=body,
        lane=chosen_lane,
        channel=str(row.get("channel", "api")),
        locale=str(row.get("locale", "en")),
        priority=priority,
        created_at=row.get("created_at"),
        metadata=metadata,
    )
