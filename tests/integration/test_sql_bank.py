"""The tools' SQL adapter against real SQLite and a real PostgreSQL server: one adapter, both."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.adapters.sql_bank import CARDS, TOOL_EFFECTS, NotFound, Refused, SqlBank, StoreUnavailable
from pipeline.tools.demo_bank import demo_rows, seed_bank
from tests.postgres import postgres_server

pytestmark = pytest.mark.integration
TODAY = date(2026, 11, 24)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def bank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlBank]:
    url = f"sqlite:///{tmp_path / 'bank.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "postgres_url")
    made = SqlBank(url)
    seed_bank(made, ["acme", "globex"], customers=20, today=TODAY)
    yield made
    made.close()


def test_lookups_return_the_seeded_rows_per_tenant(bank: SqlBank) -> None:
    rows = demo_rows(20, today=TODAY)
    cards = [c for c in rows["cards"] if c["customer_id"] == "C-00003"]
    newest = max(cards, key=lambda c: (c["ordered_on"], c["card_id"]))
    assert bank.card("acme", "C-00003")["card_last4"] == newest["last4"]
    assert bank.card("acme", "C-00003", cards[0]["last4"])["card_last4"] == cards[0]["last4"]
    transfer = bank.transfer("acme", "C-00003")
    assert transfer["transfer_id"].startswith("TR-00003") and transfer["amount"].split()[1] in {"EUR", "GBP", "USD"}
    with pytest.raises(NotFound):
        bank.card("acme", "C-99999")
    with pytest.raises(NotFound):
        bank.card("initech", "C-00003")  # another tenant's data is not there
    assert bank.queries == 5


def test_a_value_from_a_ticket_is_a_parameter_never_sql(bank: SqlBank) -> None:
    with pytest.raises(NotFound):
        bank.card("acme", "C-00003' OR '1'='1")
    with bank.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(CARDS)).scalar_one() > 0


def test_a_side_effect_is_applied_once_per_idempotency_key(bank: SqlBank) -> None:
    card = bank.card("acme", "C-00004")
    first = bank.freeze_card("acme", "C-00004", card["card_last4"], "t-1:step-1:freeze_card")
    again = bank.freeze_card("acme", "C-00004", card["card_last4"], "t-1:step-1:freeze_card")
    assert first.applied and not again.applied and first.result == again.result
    assert bank.card("acme", "C-00004", card["card_last4"])["status"] == "frozen"
    with bank.engine.connect() as connection:
        effects = connection.execute(sa.select(sa.func.count()).select_from(TOOL_EFFECTS)).scalar_one()
    assert effects == 1


def test_a_refund_above_the_payment_is_refused(bank: SqlBank) -> None:
    transfer = bank.transfer("acme", "C-00005")
    with pytest.raises(Refused):
        bank.refund("acme", "C-00005", transfer["transfer_id"], 10**9, "k-1")
    done = bank.refund("acme", "C-00005", transfer["transfer_id"], 100, "k-2")
    assert done.applied and done.result["amount"] == f"1.00 {transfer['amount'].split()[1]}"


def test_an_unreachable_database_is_a_retryable_error() -> None:
    bank = SqlBank("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2", create=False)
    with pytest.raises(StoreUnavailable) as caught:
        bank.card("acme", "C-00001")
    assert caught.value.retryable


def _open_after(barrier: Any, url: str) -> str:
    barrier.wait()
    try:
        SqlBank(url).close()
    except StoreUnavailable as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_starting_at_once_on_a_new_database_all_open_it(backend: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    """Two workers started together on a new state directory both found no table and both
    created them; one failed with "table cards already exists" and exited (seen in the
    broker-restart test's start-up)."""
    urls = []
    for attempt in range(6):
        if backend == "sqlite":
            urls.append(f"sqlite:///{tmp_path / f'bank-{attempt}.db'}")
        else:
            server = request.getfixturevalue("postgres_url")
            name = f"race_{uuid.uuid4().hex[:8]}"
            with sa.create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {name}"))
            urls.append(server.rsplit("/", 1)[0] + "/" + name)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        for url in urls:
            barrier = manager.Barrier(4)
            errors = pool.starmap(_open_after, [(barrier, url)] * 4)
            assert errors == [""] * 4, errors
            bank = SqlBank(url, create=False)
            with bank.engine.connect() as connection:
                assert set(sa.inspect(connection).get_table_names()) >= {"cards", "tool_effects"}
            bank.close()
