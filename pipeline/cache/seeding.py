"""Cache entries from labelled rows: `ticketflow cache warm` and `ticketflow demo --warm`."""

from __future__ import annotations

from pathlib import Path

from pipeline.cache.labelled import read_labelled_rows
from pipeline.events import CacheUpdate
from pipeline.pii import redact


def default_answer(label: str) -> str:
    """The answer a seed row without one gets: the help article of its resolution key."""
    return f"Our help article '{label.replace('_', ' ')}' answers this: see the Help section of the app."


def seed_updates(path: Path, tenant: str, kb_version: str, now_ms: int, ttl_ms: int) -> list[CacheUpdate]:
    """One upsert per row of a CSV with ``text`` and ``label`` (or ``category``), optional ``answer``."""
    return [CacheUpdate(tenant_id=tenant, op="upsert", created_at=now_ms, entry_id=f"seed:{path.name}:{line}",
                        text=redact(query.text), answer=row.get("answer", "").strip() or default_answer(query.label),
                        resolution_key=query.label, kb_version=kb_version, expires_at=now_ms + ttl_ms,
                        source="seed")
            for line, (query, row) in enumerate(read_labelled_rows(path), start=2)]
