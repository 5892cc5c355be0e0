"""Replay tags and the ids a replayed ticket runs under.

A replay re-enters a ticket with its original ``ticket_id`` and a replay tag. Everything
that must be done once *per run* of a ticket (its agent steps and their recorded LLM
replies, budget reservations, tool-call idempotency keys) is keyed by the run id
(``ticket@tag``), so a replay buys its own answers instead of finding the original's, and a
new tag is a new replay while the same tag is the same one (nothing billed twice).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from pipeline.cache.audit import is_audit
from pipeline.errors import ValidationFailure

TAG = re.compile(r"[A-Za-z0-9._-]{1,64}")


def run_id(ticket_id: str, replay_tag: str | None) -> str:
    """The id of one run of a ticket: the ticket id itself, or ``ticket@tag`` for a replay
    (the cache audit's tickets already have ids of their own)."""
    if replay_tag and not is_audit(replay_tag):
        return f"{ticket_id}@{replay_tag}"
    return ticket_id


def is_replay(replay_tag: str | None) -> bool:
    """A user's replay (not the cache audit, which also travels with a replay tag)."""
    return bool(replay_tag) and not is_audit(replay_tag)


def checked_tag(tag: str) -> str:
    if not TAG.fullmatch(tag):
        raise ValidationFailure(f"replay tag {tag[:70]!r} must be 1-64 characters of [A-Za-z0-9._-]")
    return tag


def new_tag(now: datetime | None = None) -> str:
    """A fresh tag, e.g. ``replay-20261204T0501-3fa2``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M")
    return f"replay-{stamp}-{secrets.token_hex(2)}"
