"""The bank's data behind the demo's tools, in SQL: SQLite by default, PostgreSQL by URL.

One adapter for both through SQLAlchemy Core: the same table definitions, bound parameters
everywhere (a ticket's text never becomes SQL), a connection pool. Tables: customers,
cards, transfers, top_ups, and tool_effects, which records every side effect under its
idempotency key so that a retried refund or card freeze is applied once.

Money is integer cents with an ISO currency; days are ISO dates (text), so that SQLite and
PostgreSQL store and compare them alike.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.errors import TicketflowError, Transient

METADATA = sa.MetaData()

CUSTOMERS = sa.Table(
    "customers", METADATA,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("email", sa.String(256), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
)
CARDS = sa.Table(
    "cards", METADATA,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("card_id", sa.String(32), primary_key=True),
    sa.Column("customer_id", sa.String(32), nullable=False, index=True),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # physical, virtual, disposable
    sa.Column("status", sa.String(16), nullable=False),  # ordered, dispatched, active, frozen, expired
    sa.Column("ordered_on", sa.String(10), nullable=False),
    sa.Column("dispatched_on", sa.String(10)),
    sa.Column("expected_by", sa.String(10)),
    sa.Column("expires_on", sa.String(10), nullable=False),
)
TRANSFERS = sa.Table(
    "transfers", METADATA,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("transfer_id", sa.String(32), primary_key=True),
    sa.Column("customer_id", sa.String(32), nullable=False, index=True),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("recipient", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, completed, failed, declined, cancelled
    sa.Column("reason", sa.String(256)),
    sa.Column("created_on", sa.String(10), nullable=False),
    sa.Column("expected_by", sa.String(10)),
)
TOP_UPS = sa.Table(
    "top_ups", METADATA,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("top_up_id", sa.String(32), primary_key=True),
    sa.Column("customer_id", sa.String(32), nullable=False, index=True),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),  # card, bank_transfer, cash
    sa.Column("status", sa.String(16), nullable=False),  # pending, completed, failed, reverted
    sa.Column("reason", sa.String(256)),
    sa.Column("created_on", sa.String(10), nullable=False),
)
TOOL_EFFECTS = sa.Table(
    "tool_effects", METADATA,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", sa.String(256), primary_key=True),
    sa.Column("tool", sa.String(64), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
)


class NotFound(TicketflowError):
    """The record a tool looked up does not exist: an answer, not a fault (no retry)."""


class Refused(TicketflowError):
    """A side effect the data does not allow (e.g. refunding more than was paid): no retry."""


class StoreUnavailable(Transient):
    """The database could not be reached or failed: transient (the runtime waits for it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "sql")


def money(cents: int, currency: str) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d} {currency}"


@dataclass(frozen=True)
class Effect:
    """The result of a side-effecting call, and whether this call applied it."""

    result: dict[str, Any]
    applied: bool


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """The tables that are missing. Workers started together on a new database each find a
    table missing and create it; all but one fail ("table cards already exists" in SQLite,
    DuplicateTable or a duplicate pg_type row in PostgreSQL) and exited. Looking again finds
    the other's tables. Only that race is retried: an unreachable database fails at once."""
    for attempt in range(attempts):
        try:
            METADATA.create_all(engine)
            return
        except sa.exc.DBAPIError as exc:
            raced = isinstance(exc, sa.exc.IntegrityError) or "already exists" in str(exc.orig)
            if not raced or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class SqlBank:
    """Queries and effects on the bank's tables; every call counts (``queries``, ``effects``)."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        try:
            self.engine: Engine = sa.create_engine(url, pool_pre_ping=True)
            if create:
                _create_tables(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot open the tool database {_safe(url)}: {exc}") from exc
        self._lock = threading.Lock()
        self.queries = 0
        self.effects = 0

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[Connection]:
        with self._lock:
            if write:
                self.effects += 1
            else:
                self.queries += 1
        try:
            with (self.engine.begin() if write else self.engine.connect()) as connection:
                yield connection
        except sa.exc.IntegrityError as exc:
            # Two deliveries of one side effect raced (a timed-out attempt finishing late):
            # the other one recorded it; the retry finds it under its key.
            raise StoreUnavailable(f"tool database: concurrent write: {exc.orig or exc}") from exc
        except sa.exc.OperationalError as exc:
            raise StoreUnavailable(f"tool database: {exc.orig or exc}") from exc

    # -- lookups (deterministic for a data version) ---------------------------------------

    def _card_row(self, connection: Connection, tenant: str, customer: str, last4: str | None) -> sa.Row[Any]:
        query = sa.select(CARDS).where(CARDS.c.tenant_id == tenant, CARDS.c.customer_id == customer)
        if last4 is not None:
            query = query.where(CARDS.c.last4 == last4)
        row = connection.execute(query.order_by(CARDS.c.ordered_on.desc(), CARDS.c.card_id.desc()).limit(1)).first()
        if row is None:
            which = f"ending {last4}" if last4 else "at all"
            raise NotFound(f"customer {customer} has no card {which}")
        return row

    def card(self, tenant: str, customer: str, last4: str | None = None) -> dict[str, Any]:
        """The customer's card ending ``last4``, else their most recently ordered card."""
        with self._connect() as connection:
            row = self._card_row(connection, tenant, customer, last4)
        return {"card_last4": row.last4, "kind": row.kind, "status": row.status, "ordered_on": row.ordered_on,
                "dispatched_on": row.dispatched_on or "not yet", "expected_by": row.expected_by or "unknown",
                "expires_on": row.expires_on}

    def transfer(self, tenant: str, customer: str, transfer_id: str | None = None) -> dict[str, Any]:
        """The customer's transfer ``transfer_id``, else their latest one."""
        query = sa.select(TRANSFERS).where(TRANSFERS.c.tenant_id == tenant, TRANSFERS.c.customer_id == customer)
        if transfer_id is not None:
            query = query.where(TRANSFERS.c.transfer_id == transfer_id)
        with self._connect() as connection:
            row = connection.execute(query.order_by(TRANSFERS.c.created_on.desc(),
                                                    TRANSFERS.c.transfer_id.desc()).limit(1)).first()
        if row is None:
            raise NotFound(f"customer {customer} has no transfer {transfer_id or ''}".rstrip())
        return {"transfer_id": row.transfer_id, "amount": money(row.amount_cents, row.currency),
                "recipient": row.recipient, "status": row.status, "reason": row.reason or "none given",
                "created_on": row.created_on, "expected_by": row.expected_by or "unknown"}

    def top_up(self, tenant: str, customer: str) -> dict[str, Any]:
        """The customer's latest top-up."""
        query = (sa.select(TOP_UPS).where(TOP_UPS.c.tenant_id == tenant, TOP_UPS.c.customer_id == customer)
                 .order_by(TOP_UPS.c.created_on.desc(), TOP_UPS.c.top_up_id.desc()).limit(1))
        with self._connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            raise NotFound(f"customer {customer} has no top-up")
        return {"top_up_id": row.top_up_id, "amount": money(row.amount_cents, row.currency), "method": row.method,
                "status": row.status, "reason": row.reason or "none given", "created_on": row.created_on}

    # -- effects (side-effecting, idempotent by key) ---------------------------------------

    def _once(self, connection: Connection, tenant: str, key: str) -> dict[str, Any] | None:
        row = connection.execute(sa.select(TOOL_EFFECTS.c.result).where(
            TOOL_EFFECTS.c.tenant_id == tenant, TOOL_EFFECTS.c.idempotency_key == key)).first()
        return None if row is None else dict(json.loads(row.result))

    def freeze_card(self, tenant: str, customer: str, last4: str, idempotency_key: str) -> Effect:
        with self._connect(write=True) as connection:
            done = self._once(connection, tenant, idempotency_key)
            if done is not None:
                return Effect(done, applied=False)
            row = self._card_row(connection, tenant, customer, last4)
            connection.execute(sa.update(CARDS).where(CARDS.c.tenant_id == tenant, CARDS.c.card_id == row.card_id)
                               .values(status="frozen"))
            result = {"card_last4": last4, "status": "frozen", "previous_status": row.status}
            connection.execute(sa.insert(TOOL_EFFECTS).values(tenant_id=tenant, idempotency_key=idempotency_key,
                                                              tool="freeze_card", result=json.dumps(result)))
        return Effect(result, applied=True)

    def refund(self, tenant: str, customer: str, transfer_id: str, amount_cents: int, idempotency_key: str) -> Effect:
        """Refund up to the transfer's amount, as a completed transfer back to the customer."""
        with self._connect(write=True) as connection:
            done = self._once(connection, tenant, idempotency_key)
            if done is not None:
                return Effect(done, applied=False)
            original = connection.execute(sa.select(TRANSFERS).where(
                TRANSFERS.c.tenant_id == tenant, TRANSFERS.c.customer_id == customer,
                TRANSFERS.c.transfer_id == transfer_id)).first()
            if original is None:
                raise NotFound(f"customer {customer} has no transfer {transfer_id}")
            if amount_cents > original.amount_cents:
                raise Refused(f"refund of {money(amount_cents, original.currency)} exceeds transfer "
                               f"{transfer_id} ({money(original.amount_cents, original.currency)})")
            refund_id = "RF-" + hashlib.sha256(f"{tenant}\x00{idempotency_key}".encode()).hexdigest()[:10].upper()
            connection.execute(sa.insert(TRANSFERS).values(
                tenant_id=tenant, transfer_id=refund_id, customer_id=customer, amount_cents=-amount_cents,
                currency=original.currency, recipient="refund", status="completed",
                reason=f"refund of {transfer_id}", created_on=original.created_on))
            result = {"refund_id": refund_id, "transfer_id": transfer_id,
                      "amount": money(amount_cents, original.currency)}
            connection.execute(sa.insert(TOOL_EFFECTS).values(tenant_id=tenant, idempotency_key=idempotency_key,
                                                              tool="refund", result=json.dumps(result)))
        return Effect(result, applied=True)

    # -- seeding ---------------------------------------------------------------------------

    def replace_tenant(self, tenant: str, tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Delete the tenant's rows and insert ``tables`` ({table name: rows}) in one transaction."""
        by_name = {table.name: table for table in METADATA.sorted_tables}
        with self.engine.begin() as connection:
            for table in reversed(METADATA.sorted_tables):
                connection.execute(sa.delete(table).where(table.c.tenant_id == tenant))
            for name, rows in tables.items():
                if rows:
                    connection.execute(sa.insert(by_name[name]), [{"tenant_id": tenant, **row} for row in rows])


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"
