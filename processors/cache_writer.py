"""Cache writer: turn eligible resolved answers into cache entries on ``cache.updates``.

Reads ``tickets.responses``. An answer is stored only when it cannot carry one customer's
data to another or go stale unseen:

- its path is ``rule`` or ``agent`` (``tool`` answers rest on the customer's own data, an
  ``escalated`` one is a hand-off, a ``cache`` one is already stored);
- the stage that answered marked it ``cacheable`` (no customer data in it);
- it has a resolution key and its question text, and the key is not in the never-cache list.

The entry carries the tenant's current knowledge-base version, an absolute expiry
(resolution time + TTL) and its provenance: a rule's answer is trusted, an agent's is
provisional (with its model and confidence) until the audit or feedback confirms it
(:mod:`processors.cache_feedback`). Every cache replica applies it from ``cache.updates``.
"""

from __future__ import annotations

from collections.abc import Collection

from pipeline.cache.semantic_cache import KbVersions
from pipeline.events import CacheUpdate, TicketResolved
from pipeline.pii import redact
from pipeline.processing import Emit, Outcome, Output

CACHEABLE_PATHS = frozenset({"rule", "agent"})


def ineligible(resolved: TicketResolved, never_keys: Collection[str]) -> str | None:
    """Why ``resolved`` must not be cached, or None when it may be."""
    if resolved.path not in CACHEABLE_PATHS:
        return f"path_{resolved.path}"
    if not resolved.cacheable:
        return "not_cacheable"
    if not resolved.resolution_key or not resolved.cache_text:
        return "no_key_or_text"
    if resolved.resolution_key in never_keys:
        return "never_key"
    return None


def entry_id_of(ticket_id: str, replay_tag: str | None) -> str:
    """The id of the entry written from a ticket's answer (one per ticket and replay)."""
    return f"{ticket_id}:{replay_tag or ''}"


class CacheWriter:
    name = "cache-writer"

    def __init__(self, kb_versions: KbVersions, ttl_s: int, never_keys: Collection[str] = ()) -> None:
        self.kb_versions = kb_versions
        self.ttl_ms = ttl_s * 1000
        self.never_keys = frozenset(never_keys)

    def handle(self, resolved: TicketResolved, origin: str) -> Outcome:
        why_not = ineligible(resolved, self.never_keys)
        if why_not is not None:
            return Emit((), note=f"skipped:{why_not}")
        assert resolved.resolution_key is not None and resolved.cache_text is not None
        text = redact(resolved.cache_text)
        # the cache stage's vector, when it is a vector of the very text stored (nothing redacted here)
        carried = resolved.embedding is not None and text == resolved.cache_text
        update = CacheUpdate(
            tenant_id=resolved.tenant_id, op="upsert", created_at=resolved.resolved_at,
            entry_id=entry_id_of(resolved.ticket_id, resolved.replay_tag), text=text,
            answer=resolved.answer, resolution_key=resolved.resolution_key,
            kb_version=self.kb_versions.current(resolved.tenant_id),
            expires_at=resolved.resolved_at + self.ttl_ms, source=resolved.path,
            model_tier=resolved.models[-1] if resolved.path == "agent" and resolved.models else None,
            confidence=resolved.confidence if resolved.path == "agent" else None,
            embedding=resolved.embedding if carried else None,
            embedding_model=resolved.embedding_model if carried else None,
        )
        return Emit((Output("cache.updates", resolved.tenant_id, update),))
