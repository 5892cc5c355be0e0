"""The vector index port: a hard partition per tenant, absolute expiry, knowledge-base versions.

Every method takes the tenant first and an adapter must confine the call to that tenant's
partition (its own shard for Qdrant Edge; a mandatory filter inside the adapter for a
Qdrant server collection). No caller can ask across tenants. Searches only see entries
whose ``expires_at`` lies in the future and whose ``kb_version`` is the one asked for.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.cache.policy import Neighbour

_NAMESPACE = uuid.UUID("6f1b7a52-5d0e-4c64-9b54-1c3e3f0a7a11")


#: Where an entry came from. Trusted sources answer on their own; an ``agent`` answer is
#: provisional until an ``audit`` or a ``human`` (support desk feedback, an operator) confirms
#: it. ``legacy``: written before entries recorded their source (provisional).
SOURCES = ("seed", "rule", "tool", "agent", "audit", "human", "legacy")
TRUSTED_SOURCES = frozenset({"seed", "rule", "tool", "audit", "human"})


@dataclass(frozen=True, slots=True)
class Provenance:
    source: str = "seed"
    model_tier: str | None = None  # the agent's model that gave the answer
    confidence: float | None = None  # the agent's own confidence in its key

    @property
    def trusted(self) -> bool:
        return self.source in TRUSTED_SOURCES


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One cached question and its answer. ``text`` is PII-redacted before it gets here."""

    entry_id: str
    text: str
    answer: str
    resolution_key: str
    kb_version: str
    created_at: int
    expires_at: int
    provenance: Provenance = Provenance()

    def payload(self, tenant: str) -> dict[str, Any]:
        return {"tenant": tenant, "entry_id": self.entry_id, "text": self.text, "answer": self.answer,
                "resolution_key": self.resolution_key, "kb_version": self.kb_version,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "source": self.provenance.source, "trusted": self.provenance.trusted,
                "model_tier": self.provenance.model_tier, "confidence": self.provenance.confidence}


def confirmation_payload(source: str) -> dict[str, Any]:
    """The payload change that confirms an entry (an audit or a human agreed with its key)."""
    if source not in TRUSTED_SOURCES:
        raise ValueError(f"an entry is confirmed by a trusted source, not {source!r}")
    return {"source": source, "trusted": True}


def point_id(tenant: str, entry_id: str) -> str:
    """Stable point id: the same entry written twice (a replay) is one point."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{entry_id}"))


def tenant_slug(tenant: str) -> str:
    """A file-system-safe, collision-free name for a tenant's partition."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tenant)[:40]
    return f"{safe}-{hashlib.sha256(tenant.encode()).hexdigest()[:12]}"


#: The payload a search returns: what the hit decision reads. The answer is fetched for hits only.
DECISION_FIELDS = ("entry_id", "resolution_key", "text", "trusted")


def neighbour_from_payload(score: float, payload: dict[str, Any]) -> Neighbour:
    return Neighbour(similarity=float(score), resolution_key=str(payload["resolution_key"]),
                     text=str(payload["text"]), answer=payload.get("answer"),
                     entry_id=str(payload["entry_id"]), trusted=bool(payload.get("trusted", False)))


class VectorIndex(Protocol):
    dim: int

    def upsert(self, tenant: str, entries: Sequence[StoredEntry], vectors: npt.NDArray[np.float32]) -> None: ...

    def search(self, tenant: str, vectors: npt.NDArray[np.float32], limit: int, now_ms: int,
               kb_version: str) -> list[list[Neighbour]]:
        """The live entries nearest to each vector, most similar first (cosine similarity).

        Neighbours carry ``DECISION_FIELDS``; their ``answer`` may be None (see :meth:`answer`).
        """
        ...

    def answer(self, tenant: str, entry_id: str) -> str | None:
        """The stored answer of one entry (None when it is gone)."""
        ...

    def confirm(self, tenant: str, entry_id: str, source: str) -> None:
        """Mark one entry trusted, confirmed by ``source`` (``audit`` or ``human``); a no-op when gone."""
        ...

    def delete(self, tenant: str, entry_id: str) -> None:
        """Remove one entry (rejected by an audit or by feedback); a no-op when gone."""
        ...

    def purge(self, tenant: str, resolution_key: str | None = None, before_ms: int | None = None,
              keep_kb_version: str | None = None) -> None:
        """Delete the tenant's entries (of one key; created at or before a time; of other KB versions)."""
        ...

    def delete_expired(self, tenant: str, now_ms: int) -> None: ...

    def count(self, tenant: str) -> int: ...

    def tenants(self) -> list[str]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
