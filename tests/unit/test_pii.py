from __future__ import annotations

import pytest

from pipeline.pii import redact


@pytest.mark.parametrize(("text", "expected"), [
    ("mail me at john.doe+x@example.co.uk", "mail me at <EMAIL>"),
    ("card 4111 1111 1111 1111 blocked", "card <CARD> blocked"),
    ("card 4111-1111-1111-1111", "card <CARD>"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN <IBAN> please"),
    ("call +44 20 7946 0958", "call <PHONE>"),
    ("call 555-123-4567 now", "call <PHONE> now"),
])
def test_redacts(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "I topped up 25 euros on 12/03/2024",
    "transfer of 1000 took 3 days",
    "card 1234 5678 9012 3456 fails Luhn",  # not a valid card number: left alone
])
def test_leaves_ordinary_text(text: str) -> None:
    assert "<" not in redact(text)


def test_iban_needs_a_valid_checksum() -> None:
    # Its digits may still look like a phone number: redacting too much is the safe side.
    assert "<IBAN>" not in redact("GB00 WEST 1234 5698 7654 32 is no IBAN")
