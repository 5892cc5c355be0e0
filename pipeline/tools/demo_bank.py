"""Seeded demo data for the bank's tables: customers with cards, transfers and top-ups.

Deterministic for a seed and a day, so tests and the demo know what a lookup returns.
Customer ids are ``C-00001`` onwards; the demo gives its tickets these ids.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from pipeline.adapters.sql_bank import SqlBank

_FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena"]
_LAST = ["Novak", "Okafor", "Silva", "Berg", "Kowalski", "Moreau", "Rossi", "Tanaka", "Ionescu", "Fischer"]
_COUNTRIES = ["GB", "DE", "FR", "ES", "IT", "NL", "PL", "IE"]
_CURRENCIES = ["EUR", "EUR", "EUR", "GBP", "USD"]


def customer_id(n: int) -> str:
    return f"C-{n:05d}"


def demo_rows(customers: int = 200, seed: int = 7, today: date | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows of every table for one tenant ({table: rows})."""
    today = today or date.today()
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = {"customers": [], "cards": [], "transfers": [], "top_ups": []}

    def day(days_ago: int) -> str:
        return (today - timedelta(days=days_ago)).isoformat()

    for n in range(1, customers + 1):
        cid = customer_id(n)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        rows["customers"].append({"customer_id": cid, "name": f"{first} {last}",
                                  "email": f"{first.lower()}.{last.lower()}{n}@example.com",
                                  "country": rng.choice(_COUNTRIES)})
        for c in range(rng.choice([1, 1, 2])):
            ordered = rng.randint(1, 400)
            status = rng.choice(["active", "active", "active", "dispatched", "ordered", "frozen"])
            dispatched = None if status == "ordered" else day(max(0, ordered - 2))
            rows["cards"].append({
                "card_id": f"{cid}-K{c}", "customer_id": cid, "last4": f"{rng.randint(0, 9999):04d}",
                "kind": rng.choice(["physical", "physical", "virtual"]), "status": status, "ordered_on": day(ordered),
                "dispatched_on": dispatched, "expected_by": day(ordered - 7) if ordered > 7 else day(0),
                "expires_on": (today + timedelta(days=rng.randint(30, 1500))).isoformat()})
        for t in range(rng.randint(1, 4)):
            created = rng.randint(0, 60)
            status = rng.choice(["completed", "completed", "pending", "failed", "declined"])
            rows["transfers"].append({
                "transfer_id": f"TR-{n:05d}{t:03d}", "customer_id": cid,
                "amount_cents": rng.randint(500, 250_000), "currency": rng.choice(_CURRENCIES),
                "recipient": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", "status": status,
                "reason": {"failed": "recipient bank rejected the account number",
                           "declined": "exceeds the daily transfer limit"}.get(status),
                "created_on": day(created), "expected_by": day(created - 2) if created > 2 else day(-1)})
        for u in range(rng.randint(0, 3)):
            status = rng.choice(["completed", "completed", "pending", "failed", "reverted"])
            rows["top_ups"].append({
                "top_up_id": f"TU-{n:05d}{u:03d}", "customer_id": cid, "amount_cents": rng.randint(1000, 100_000),
                "currency": rng.choice(_CURRENCIES), "method": rng.choice(["card", "bank_transfer", "cash"]),
                "status": status,
                "reason": {"failed": "the card issuer declined the payment",
                           "reverted": "the paying card was reported by its issuer"}.get(status),
                "created_on": day(rng.randint(0, 30))})
    return rows


def seed_bank(bank: SqlBank, tenants: Iterable[str], customers: int = 200, seed: int = 7,
              today: date | None = None) -> int:
    """Replace each tenant's rows with the demo data; returns the number of customers per tenant."""
    rows = demo_rows(customers, seed, today)
    for tenant in tenants:
        bank.replace_tenant(tenant, rows)
    return customers
