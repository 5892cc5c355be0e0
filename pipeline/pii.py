"""PII redaction for the text that may enter the cache or the logs.

Emails, phone numbers, payment card numbers (Luhn-checked) and IBANs (mod-97-checked)
become typed placeholders such as ``<EMAIL>``, so that cached answers keyed on the text
never carry one customer's data to another.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# International or local numbers: 7-15 digits with the usual separators.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?!\w)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "<CARD>" if _luhn_ok(digits) else match.group()


def _iban(match: re.Match[str]) -> str:
    return "<IBAN>" if _iban_ok(match.group()) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "<PHONE>" if 7 <= len(digits) <= 15 else match.group()


def redact(text: str) -> str:
    """Replace PII in ``text`` with placeholders; other text is unchanged."""
    text = _EMAIL.sub("<EMAIL>", text)
    text = _IBAN.sub(_iban, text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)
