"""Cache entries from labelled rows: `ticketflow cache warm` and `ticketflow demo --warm`."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.errors import ConfigurationError
from pipeline.events import CacheUpdate
from pipeline.pii import redact


def default_answer(label: str) -> str:
    """The answer a seed row without one gets: the help article of its resolution key."""
    return f"Our help article '{label.replace('_', ' ')}' answers this: see the Help section of the app."


def seed_updates(path: Path, tenant: str, kb_version: str, now_ms: int, ttl_ms: int) -> list[CacheUpdate]:
    """One upsert per row of a CSV with ``text`` and ``label`` (or ``category``), optional ``answer``."""
    updates = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                text = (row.get("text") or "").strip()
                label = (row.get("label") or row.get("category") or "").strip()
                if not text or not label:
                    raise ConfigurationError(f"{path}:{line}: a seed row needs text and label")
                answer = (row.get("answer") or "").strip() or default_answer(label)
                updates.append(CacheUpdate(tenant_id=tenant, op="upsert", created_at=now_ms,
                                           entry_id=f"seed:{path.name}:{line}", text=redact(text), answer=answer,
                                           resolution_key=label, kb_version=kb_version,
                                           expires_at=now_ms + ttl_ms))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    if not updates:
        raise ConfigurationError(f"{path}: no rows")
    return updates
