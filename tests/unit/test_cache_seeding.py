"""Seed rows (cache warm, demo --warm) become upserts: answer column or the key's article, PII redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cache.seeding import default_answer, seed_updates
from pipeline.errors import ConfigurationError


def test_rows_become_upserts(tmp_path: Path) -> None:
    path = tmp_path / "seed.csv"
    path.write_text("text,label,answer\nWhere is my card? mail a@b.com,card_arrival,Five days.\n"
                    "Why was I charged?,card_fee,\n")
    first, second = seed_updates(path, "acme", "3", now_ms=1_000, ttl_ms=60_000)
    assert (first.tenant_id, first.op, first.kb_version, first.expires_at) == ("acme", "upsert", "3", 61_000)
    assert first.text == "Where is my card? mail <EMAIL>" and first.answer == "Five days."
    assert second.answer == default_answer("card_fee") and second.resolution_key == "card_fee"
    assert first.entry_id != second.entry_id


def test_a_row_without_label_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "seed.csv"
    path.write_text("text,label\nWhere is my card?,\n")
    with pytest.raises(ConfigurationError, match=r"seed\.csv:2: empty text or label"):
        seed_updates(path, "acme", "1", 0, 1)
