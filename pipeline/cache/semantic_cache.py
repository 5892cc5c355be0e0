"""The semantic cache: embed, look up the tenant's partition, decide; and apply updates.

Lookups never see another tenant's entries (the index port is partitioned by tenant),
expired entries (absolute expiry, set when the entry is written and never extended by a
hit) or entries written under an older knowledge-base version of the tenant.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.cache.embedder import Embedder, Vectors
from pipeline.cache.index import Provenance, StoredEntry, VectorIndex
from pipeline.cache.metrics import CacheMetrics
from pipeline.cache.policy import MISS_EMPTY, HitPolicy, SecondOpinion, Verdict, decide, tightened
from pipeline.errors import ConfigurationError
from pipeline.events import CacheUpdate
from pipeline.pii import redact
from pipeline.processing import Clock

#: The longest an applied upsert or confirmation may stay unflushed (see SemanticCache.apply).
FLUSH_EVERY_S = 5.0

DEFAULT_KB_VERSION = "1"
#: New entries after which the upkeep indexes at once: an unindexed 8,005-entry shard answered
#: a query in 2.3 ms (p50), indexed in 0.7 ms (bench/cache_probes.py).
OPTIMIZE_AFTER = 1000


class KbVersions(Protocol):
    """The current knowledge-base version of each tenant; a change invalidates its entries."""

    def current(self, tenant: str) -> str: ...


class FixedKbVersions:
    def __init__(self, versions: dict[str, str] | None = None) -> None:
        self.versions = dict(versions or {})

    def current(self, tenant: str) -> str:
        return self.versions.get(tenant, DEFAULT_KB_VERSION)


class SecondOpinions(Protocol):
    """An independent judge of a query's intent (the router's classifier, over its labelled
    examples): one opinion per text, given its embedding."""

    def opinions(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]) -> list[SecondOpinion]: ...


class PolicyLevels(Protocol):
    """The audit's tightening level per tenant (0: the calibrated policy)."""

    def level(self, tenant: str) -> int: ...


class PolicyBook:
    """Hit policies per tenant, with a default. File: JSON ``{"default": {...}, "tenants": {T: {...}}}``."""

    def __init__(self, default: HitPolicy | None = None, tenants: dict[str, HitPolicy] | None = None) -> None:
        self.default = default or HitPolicy()
        self.tenants = dict(tenants or {})

    def for_tenant(self, tenant: str) -> HitPolicy:
        return self.tenants.get(tenant, self.default)

    @classmethod
    def load(cls, path: Path | None) -> PolicyBook:
        if path is None:
            return cls()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read cache policy file {path}: {exc}") from exc
        if not isinstance(data, dict) or set(data) - {"default", "tenants"}:
            raise ConfigurationError(f"{path}: expected an object with 'default' and/or 'tenants'")
        default_values = {**HitPolicy().to_dict(), **data.get("default", {})}
        default = HitPolicy.from_dict(default_values)
        tenants = {t: HitPolicy.from_dict({**default.to_dict(), **values})
                   for t, values in data.get("tenants", {}).items()}
        return cls(default, tenants)


class SemanticCache:
    def __init__(self, embedder: Embedder, index: VectorIndex, clock: Clock, policies: PolicyBook | None = None,
                 kb_versions: KbVersions | None = None, metrics: CacheMetrics | None = None,
                 ttl_s: int = 7 * 24 * 3600, chunk: int = 64, opinions: SecondOpinions | None = None,
                 levels: PolicyLevels | None = None) -> None:
        self.embedder = embedder
        self.index = index
        self.clock = clock
        self.policies = policies or PolicyBook()
        self.opinions = opinions
        self.levels = levels
        self.kb_versions = kb_versions or FixedKbVersions()
        self.metrics = metrics
        self.ttl_ms = ttl_s * 1000
        self.chunk = chunk
        self._written_since_optimize = 0
        self.encoded_upserts = 0  # upserts that came without a vector of this model (encoded here)
        #: set when enough was written that the upkeep should index it now, not at its next round
        self.upkeep_due = threading.Event()
        self._lock = threading.Lock()  # the index is shared by the lookup and follower threads
        self._flushed_at = time.monotonic()
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        for callback in self._on_close:
            callback()
        with self._lock:
            self.index.close()
        close = getattr(self.embedder, "close", None)
        if close is not None:
            close()

    def lookup_many(self, queries: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for (tenant, text) pairs (see :meth:`lookup_many_with_vectors`)."""
        return self.lookup_many_with_vectors(queries)[0]

    def lookup_many_with_vectors(self, queries: Sequence[tuple[str, str]]) -> tuple[list[Verdict], Vectors]:
        """Verdicts for (tenant, text) pairs, and the texts' embeddings (rows in query order).

        The texts go to the embedder in chunks of ``chunk`` (all submitted at once, so that
        the embedder's thread encodes chunk i+1 while this thread searches and decides chunk i).
        """
        # Chunks of similar length: padding to the longest text of a chunk is the encoder's waste.
        order = sorted(range(len(queries)), key=lambda i: len(queries[i][1]))
        ordered = [queries[i] for i in order]
        chunks = [ordered[i:i + self.chunk] for i in range(0, len(ordered), self.chunk)]
        submit = getattr(self.embedder, "submit", None)
        found: list[Verdict] = []
        encoded: list[Vectors] = []
        if submit is None:
            for part in chunks:
                encoded.append(self.embedder.encode([t for _, t in part]))
                found.extend(self._lookup_chunk(part, encoded[-1]))
        else:
            started = time.perf_counter()
            futures = [submit([text for _, text in part]) for part in chunks]
            for part, future in zip(chunks, futures, strict=True):
                encoded.append(future.result())
                if self.metrics:
                    self.metrics.embed_seconds.observe(time.perf_counter() - started)
                found.extend(self._lookup_chunk(part, encoded[-1]))
                started = time.perf_counter()
        verdicts: list[Verdict | None] = [None] * len(queries)
        for position, verdict in zip(order, found, strict=True):
            verdicts[position] = verdict
        vectors = np.zeros((len(queries), self.embedder.dim), dtype=np.float32)
        if encoded:
            vectors[order] = np.vstack(encoded)
        return [v for v in verdicts if v is not None], vectors

    def _lookup_chunk(self, queries: Sequence[tuple[str, str]], vectors: npt.NDArray[np.float32]) -> list[Verdict]:
        by_tenant: dict[str, list[int]] = {}
        for i, (tenant, _) in enumerate(queries):
            by_tenant.setdefault(tenant, []).append(i)
        verdicts: list[Verdict | None] = [None] * len(queries)
        now = self.clock.now_ms()
        opinions: list[SecondOpinion | None] = [None] * len(queries)
        if self.opinions is not None and queries:
            opinions = list(self.opinions.opinions([text for _, text in queries], vectors))
        for tenant, rows in by_tenant.items():
            policy = self.policy_for(tenant)
            t0 = time.perf_counter()
            with self._lock:
                found = self.index.search(tenant, vectors[rows], policy.k, now, self.kb_versions.current(tenant))
            for row, neighbours in zip(rows, found, strict=True):
                verdict = decide(policy, queries[row][1], neighbours, opinion=opinions[row])
                if verdict.hit and verdict.answer is None and verdict.entry_id is not None:
                    with self._lock:
                        answer = self.index.answer(tenant, verdict.entry_id)
                    # purged between the search and now: a miss, never a hit without an answer
                    verdict = replace(verdict, answer=answer) if answer is not None else replace(
                        verdict, hit=False, reason=MISS_EMPTY)
                verdicts[row] = verdict
                if self.metrics:
                    self.metrics.observe(tenant, verdict)
            if self.metrics:
                per_query = (time.perf_counter() - t0) / len(rows)
                for _ in rows:
                    self.metrics.lookup_seconds.observe(per_query)
        return [v for v in verdicts if v is not None]

    def policy_for(self, tenant: str) -> HitPolicy:
        """The tenant's calibrated policy, tightened by the audit's level for it."""
        policy = self.policies.for_tenant(tenant)
        return tightened(policy, self.levels.level(tenant)) if self.levels is not None else policy

    def lookup(self, tenant: str, text: str) -> Verdict:
        return self.lookup_many([(tenant, text)])[0]

    def entry(self, tenant: str, entry_id: str, text: str, answer: str, resolution_key: str,
              created_at: int | None = None, provenance: Provenance | None = None) -> CacheUpdate:
        """An upsert for an answer resolved now, under the tenant's current KB version."""
        created = created_at if created_at is not None else self.clock.now_ms()
        origin = provenance or Provenance()
        return CacheUpdate(tenant_id=tenant, op="upsert", created_at=created, entry_id=entry_id,
                           text=redact(text), answer=answer, resolution_key=resolution_key,
                           kb_version=self.kb_versions.current(tenant), expires_at=created + self.ttl_ms,
                           source=origin.source, model_tier=origin.model_tier, confidence=origin.confidence)

    def apply(self, updates: Sequence[CacheUpdate]) -> None:
        """Apply upserts (embedded together), purges, confirmations and deletions in order.

        The index is flushed (made durable) before the batch's offsets are committed when the
        batch removes anything (a purge or a deletion: losing one to a crash would serve an
        answer that was taken back), and otherwise at most every ``FLUSH_EVERY_S``: a crash
        then loses at most that many seconds of upserts and confirmations, which only costs
        hits (a missing entry misses; an unconfirmed one stays provisional). Flushing every
        batch took 46 % of the worker's GIL time at 20 tickets/s (py-spy), each flush about
        20 ms, and held every stage's hop time at 150-300 ms."""
        pending: list[CacheUpdate] = []
        for update in updates:
            if update.op == "upsert":
                pending.append(update)
                continue
            self._upsert(pending)
            pending = []
            if self.metrics:
                self.metrics.writes.labels(update.op).inc()
            with self._lock:
                if update.op == "purge":
                    self.index.purge(update.tenant_id, update.resolution_key, before_ms=update.created_at,
                                     keep_kb_version=update.kb_version)
                elif update.entry_id is None:
                    raise ValueError(f"cache {update.op} for tenant {update.tenant_id} lacks entry_id")
                elif update.op == "confirm":
                    self.index.confirm(update.tenant_id, update.entry_id, update.source or "human")
                else:
                    self.index.delete(update.tenant_id, update.entry_id)
        self._upsert(pending)
        removes = any(u.op in ("purge", "delete") for u in updates)
        if removes or time.monotonic() - self._flushed_at >= FLUSH_EVERY_S:
            with self._lock:
                self.index.flush()
            self._flushed_at = time.monotonic()

    def _upsert(self, updates: Sequence[CacheUpdate]) -> None:
        if not updates:
            return
        vectors = self._vectors(updates)
        by_tenant: dict[str, list[int]] = {}
        for i, update in enumerate(updates):
            by_tenant.setdefault(update.tenant_id, []).append(i)
        self._written_since_optimize += len(updates)
        if self._written_since_optimize >= OPTIMIZE_AFTER:
            self.upkeep_due.set()
        if self.metrics:
            self.metrics.writes.labels("upsert").inc(len(updates))
        for tenant, rows in by_tenant.items():
            entries = [_stored(updates[i]) for i in rows]
            with self._lock:
                self.index.upsert(tenant, entries, np.asarray(vectors[rows]))

    def _vectors(self, updates: Sequence[CacheUpdate]) -> Vectors:
        """The vectors that came with the upserts (same model), the rest encoded here."""
        dim = self.embedder.dim
        vectors = np.zeros((len(updates), dim), dtype=np.float32)
        missing = []
        for i, update in enumerate(updates):
            if update.embedding is not None and update.embedding_model == self.embedder.name \
                    and len(update.embedding) == 4 * dim:
                vectors[i] = np.frombuffer(update.embedding, dtype="<f4")
            else:
                missing.append(i)
        if missing:
            vectors[missing] = self.embedder.encode([redact(updates[i].text or "") for i in missing])
        self.encoded_upserts += len(missing)
        return vectors

    def maintain(self) -> None:
        """Periodic upkeep: drop expired entries, and build the HNSW index of new entries.

        Qdrant Edge only indexes when asked: a 60,000-entry shard answered in 14.5 ms (p50)
        unindexed and 1.8 ms indexed (bench/cache_probes.py). Searches go on while it indexes.
        """
        self.sweep()
        optimize = getattr(self.index, "optimize", None)
        if optimize is not None and self._written_since_optimize:
            self._written_since_optimize = 0
            optimize()

    def sweep(self) -> dict[str, int]:
        """Delete expired entries; returns the entry count per tenant (for the metrics)."""
        now = self.clock.now_ms()
        counts = {}
        with self._lock:
            for tenant in self.index.tenants():
                self.index.delete_expired(tenant, now)
                counts[tenant] = self.index.count(tenant)
        if self.metrics:
            for tenant, count in counts.items():
                self.metrics.entries.labels(tenant).set(count)
        return counts


#: What an upsert must carry to become an entry.
REQUIRED_FOR_UPSERT = ("entry_id", "text", "answer", "resolution_key", "kb_version", "expires_at")


def missing_fields(update: CacheUpdate) -> list[str]:
    return [name for name in REQUIRED_FOR_UPSERT if getattr(update, name) in (None, "")]


def _stored(update: CacheUpdate) -> StoredEntry:
    missing = missing_fields(update)
    if missing:
        raise ValueError(f"cache upsert for tenant {update.tenant_id} lacks {', '.join(missing)}")
    values: dict[str, Any] = {name: getattr(update, name) for name in
                              ("entry_id", "answer", "resolution_key", "kb_version", "expires_at")}
    provenance = Provenance(update.source or "legacy", update.model_tier, update.confidence)
    return StoredEntry(text=redact(update.text or ""), created_at=update.created_at, provenance=provenance,
                       **values)
