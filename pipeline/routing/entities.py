"""Entity extraction for the deterministic router: what a ticket names, by pattern.

Deterministic and explainable: every entity carries the span it came from. Extraction runs
on the original text (the router needs the card's last four digits; the cache never sees
them), and only the rules decide what an entity may be used for.

Entities: order and transfer ids, a card's last four digits, amounts with a currency,
dates (ISO, day-month-year, "12 March", relative "today"/"yesterday"), email addresses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

_ORDER = re.compile(r"\border\s*(?:id|number|no\.?|#)?\s*[:#]?\s*([A-Z]{0,3}-?\d{5,12})\b", re.I)
_TRANSFER = re.compile(r"\b(?:transfer|payment|transaction)\s*(?:id|reference|ref\.?|number|no\.?|#)\s*[:#]?\s*"
                       r"([A-Z0-9]{2,4}-?[A-Z0-9]{4,16})\b", re.I)
_LAST_FOUR = re.compile(r"\b(?:card\s*)?(?:ending|ends)\s*(?:in|with)?\s*[:#]?\s*(\d{4})\b"
                        r"|\blast\s*(?:four|4)\s*(?:digits)?\s*(?:are|is|:)?\s*(\d{4})\b"
                        r"|\*{2,}\s?(\d{4})\b", re.I)
_CURRENCY = {"€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "$": "USD", "usd": "USD",
             "dollar": "USD", "dollars": "USD", "£": "GBP", "gbp": "GBP", "pound": "GBP", "pounds": "GBP"}
_AMOUNT = re.compile(r"(?P<pre>[€$£])\s?(?P<a>\d{1,3}(?:[,.]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
                     r"|(?P<b>\d{1,3}(?:[,.]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)\s?"
                     r"(?P<post>eur|euros?|usd|dollars?|gbp|pounds?|€|\$|£)\b", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DMY_DATE = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
_NAMED_DATE = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(" + "|".join(_MONTHS) + r")\b(?:\s+(\d{4}))?", re.I)
_RELATIVE = re.compile(r"\b(today|yesterday)\b", re.I)


@dataclass(frozen=True, slots=True)
class Entity:
    kind: str  # order_id, transfer_id, card_last4, amount, date, email
    value: str  # normalised: amounts "123.45 EUR", dates ISO
    span: tuple[int, int]


def _amount(number: str, currency: str) -> str | None:
    raw = number.replace(" ", "")
    if "," in raw and "." in raw:  # 1,234.56 or 1.234,56: the last separator is the decimal one
        raw = raw.replace(",", "") if raw.rfind(".") > raw.rfind(",") else raw.replace(".", "").replace(",", ".")
    elif "," in raw:
        head, _, tail = raw.rpartition(",")
        raw = f"{head.replace(',', '')}.{tail}" if len(tail) <= 2 else raw.replace(",", "")
    elif raw.count(".") == 1 and len(raw.rpartition(".")[2]) == 3:
        raw = raw.replace(".", "")  # 1.234 is a thousand separator
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return f"{value:.2f} {_CURRENCY[currency.lower()]}"


def _valid_date(y: int, m: int, d: int) -> str | None:
    try:
        return date(y, m, d).isoformat()
    except ValueError:
        return None


def extract(text: str, today: date) -> list[Entity]:
    """Every entity in ``text``, in order of position; ``today`` resolves relative dates."""
    found: list[Entity] = []
    for match in _ORDER.finditer(text):
        found.append(Entity("order_id", match.group(1).upper(), match.span(1)))
    for match in _TRANSFER.finditer(text):
        found.append(Entity("transfer_id", match.group(1).upper(), match.span(1)))
    for match in _LAST_FOUR.finditer(text):
        group = next(g for g in (1, 2, 3) if match.group(g))
        found.append(Entity("card_last4", match.group(group), match.span(group)))
    for match in _AMOUNT.finditer(text):
        number, currency = (match.group("a"), match.group("pre")) if match.group("pre") else (
            match.group("b"), match.group("post"))
        value = _amount(number, currency)
        if value is not None:
            found.append(Entity("amount", value, match.span()))
    for match in _EMAIL.finditer(text):
        found.append(Entity("email", match.group().lower(), match.span()))
    for match in _ISO_DATE.finditer(text):
        iso = _valid_date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if iso:
            found.append(Entity("date", iso, match.span()))
    for match in _DMY_DATE.finditer(text):
        iso = _valid_date(int(match.group(3)), int(match.group(2)), int(match.group(1)))
        if iso:
            found.append(Entity("date", iso, match.span()))
    for match in _NAMED_DATE.finditer(text):
        year = int(match.group(3)) if match.group(3) else today.year
        iso = _valid_date(year, _MONTHS[match.group(2).lower()], int(match.group(1)))
        if iso:
            found.append(Entity("date", iso, match.span()))
    for match in _RELATIVE.finditer(text):
        day = today if match.group(1).lower() == "today" else today - timedelta(days=1)
        found.append(Entity("date", day.isoformat(), match.span()))
    return sorted(found, key=lambda e: e.span)
