"""Entity extraction for the router: ids, card digits, amounts, dates, emails."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.routing.entities import extract

TODAY = date(2026, 11, 23)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(e.kind, e.value) for e in extract(text, TODAY)]


@pytest.mark.parametrize(("text", "expected"), [
    ("Where is order #A-1234567?", [("order_id", "A-1234567")]),
    ("my order number 99887766 never came", [("order_id", "99887766")]),
    ("transfer reference: TR-88AB1234 is stuck", [("transfer_id", "TR-88AB1234")]),
    ("the card ending in 4242 was declined", [("card_last4", "4242")]),
    ("last four digits are 1234", [("card_last4", "1234")]),
    ("I was charged €1.234,50 twice", [("amount", "1234.50 EUR")]),
    ("refund 5000 EUR to account X", [("amount", "5000.00 EUR")]),
    ("a $12.99 fee", [("amount", "12.99 USD")]),
    ("sent 250 pounds on 12 March", [("amount", "250.00 GBP"), ("date", "2026-03-12")]),
    ("paid on 2026-11-02 and again yesterday", [("date", "2026-11-02"), ("date", "2026-11-22")]),
    ("on 03/11/2026", [("date", "2026-11-03")]),
    ("mail Jo.Doe@Example.com please", [("email", "jo.doe@example.com")]),
    ("nothing to see here", []),
])
def test_extract(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


def test_impossible_dates_are_not_entities() -> None:
    assert kinds("on 31/02/2026 or 2026-13-01") == []


def test_spans_point_at_the_text() -> None:
    text = "card ending in 4242"
    (entity,) = extract(text, TODAY)
    assert text[entity.span[0]:entity.span[1]] == "4242"
