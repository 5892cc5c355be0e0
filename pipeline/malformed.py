"""Malformed ingress records of the kinds production sees, for the demo and the tests.

Each one must become a DeadLetter with a reason and its original bytes, while the good
tickets around it are still answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.events import TicketSubmitted, to_record
from pipeline.serde import AvroSerde

KINDS = ("not_avro", "json_wrong_types", "missing_tenant", "huge_body", "invalid_utf8")
HUGE_BODY_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class MalformedRecord:
    kind: str
    key: bytes
    value: bytes


def malformed_records(n: int, serde: AvroSerde, run_id: str, created_at: int) -> Iterator[MalformedRecord]:
    """``n`` bad records cycling through :data:`KINDS`, keyed ``bad-<run_id>-<i>``."""
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        key = f"bad-{run_id}-{i}"
        yield MalformedRecord(kind, key.encode(), _value(kind, key, serde, created_at))


def _value(kind: str, key: str, serde: AvroSerde, created_at: int) -> bytes:
    if kind == "not_avro":
        return b"\x07\x00garbage that is neither Avro nor JSON \xfe\xff"
    if kind == "json_wrong_types":
        return json.dumps({"ticket_id": key, "tenant_id": "acme", "body": 42,
                           "priority": "high"}).encode()
    if kind == "missing_tenant":
        return json.dumps({"ticket_id": key, "body": "where is my card?"}).encode()
    if kind == "huge_body":
        ticket = TicketSubmitted(ticket_id=key, tenant_id="acme", body="x" * HUGE_BODY_BYTES,
                                 created_at=created_at)
        return serde.encode(TicketSubmitted.SCHEMA, to_record(ticket))
    if kind == "invalid_utf8":
        marker = "MARKER-FOR-BAD-UTF8"
        ticket = TicketSubmitted(ticket_id=key, tenant_id="acme", body=marker, created_at=created_at)
        encoded = serde.encode(TicketSubmitted.SCHEMA, to_record(ticket))
        # Same length, so the Avro framing stays intact: only the string bytes go bad.
        return encoded.replace(marker.encode(), b"\xff\xfe" + marker.encode()[2:])
    raise ValueError(f"unknown kind {kind!r}")
