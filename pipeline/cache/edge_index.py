"""Qdrant Edge adapter: one in-process shard per tenant under a local directory.

A tenant's entries live in their own shard (``ROOT/<tenant-slug>/``), so a query can only
ever see its own tenant's vectors: the partition is physical, not a filter. Shards open
lazily and stay open; writes are flushed by :meth:`flush` (the cache follower calls it
before it commits its offsets). Segments are optimised (HNSW built) in the background
after a burst of writes; until then a search scans the unindexed segment, which is exact.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe

from pipeline.cache.index import (
    DECISION_FIELDS,
    StoredEntry,
    confirmation_payload,
    neighbour_from_payload,
    point_id,
    tenant_slug,
)
from pipeline.cache.policy import Neighbour
from pipeline.faults import adapter

VECTOR = "text"
_INDEXED = (("expires_at", qe.PayloadSchemaType.Integer), ("created_at", qe.PayloadSchemaType.Integer),
            ("kb_version", qe.PayloadSchemaType.Keyword), ("resolution_key", qe.PayloadSchemaType.Keyword))


_DECISION_FIELDS = qe.PayloadSelector.Include(list(DECISION_FIELDS))


def live_filter(now_ms: int, kb_version: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition("expires_at", range=qe.RangeFloat(gt=float(now_ms))),
                           qe.FieldCondition("kb_version", match=qe.MatchValue(kb_version))])


@adapter("qdrant-edge")
class EdgeIndex:
    def __init__(self, root: Path, dim: int, indexing_threshold: int = 10_000) -> None:
        self.root = root
        self.dim = dim
        self.indexing_threshold = indexing_threshold
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={VECTOR: qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold),
        )

    def _shard(self, tenant: str, create: bool) -> qe.EdgeShard | None:
        with self._lock:
            shard = self._shards.get(tenant)
            if shard is not None:
                return shard
            path = self.root / tenant_slug(tenant)
            if (path / "tenant").exists():
                shard = qe.EdgeShard.load(str(path / "shard"))
            elif create:
                path.mkdir(parents=True, exist_ok=True)
                shard = qe.EdgeShard.create(str(path / "shard"), self._config())
                for field, kind in _INDEXED:
                    shard.update(qe.UpdateOperation.create_field_index(field, kind))
                (path / "tenant").write_text(tenant)
            else:
                return None
            self._shards[tenant] = shard
            return shard

    def upsert(self, tenant: str, entries: Sequence[StoredEntry], vectors: npt.NDArray[np.float32]) -> None:
        if not entries:
            return
        shard = self._shard(tenant, create=True)
        assert shard is not None
        points = [qe.Point(point_id(tenant, e.entry_id), {VECTOR: v.tolist()}, e.payload(tenant))
                  for e, v in zip(entries, vectors, strict=True)]
        shard.update(qe.UpdateOperation.upsert_points(points))

    def search(self, tenant: str, vectors: npt.NDArray[np.float32], limit: int, now_ms: int,
               kb_version: str) -> list[list[Neighbour]]:
        shard = self._shard(tenant, create=False)
        if shard is None:
            return [[] for _ in range(len(vectors))]
        flt = live_filter(now_ms, kb_version)
        # Only what the decision reads: payload retrieval was half the search time here.
        requests = [qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector.tolist(), VECTOR), filter=flt,
                                    with_payload=_DECISION_FIELDS) for vector in vectors]
        # One planned batch: the searches share a pass over the segments.
        found = shard.query_batch(qe.QueryBatchRequest(requests)) if len(requests) > 1 else [
            shard.query(requests[0])]
        return [[neighbour_from_payload(p.score, p.payload or {}) for p in points] for points in found]

    def answer(self, tenant: str, entry_id: str) -> str | None:
        shard = self._shard(tenant, create=False)
        if shard is None:
            return None
        records = shard.retrieve([point_id(tenant, entry_id)], qe.PayloadSelector.Include(["answer"]), False)
        return str((records[0].payload or {})["answer"]) if records else None

    def confirm(self, tenant: str, entry_id: str, source: str) -> None:
        shard = self._shard(tenant, create=False)
        if shard is None:
            return
        pid = point_id(tenant, entry_id)
        found = shard.retrieve([pid], qe.PayloadSelector.Include(["trusted"]), False)
        if found and not (found[0].payload or {}).get("trusted", False):  # a trusted source stays as it is
            shard.update(qe.UpdateOperation.set_payload([pid], confirmation_payload(source)))

    def delete(self, tenant: str, entry_id: str) -> None:
        shard = self._shard(tenant, create=False)
        if shard is not None:
            shard.update(qe.UpdateOperation.delete_points([point_id(tenant, entry_id)]))

    def purge(self, tenant: str, resolution_key: str | None = None, before_ms: int | None = None,
              keep_kb_version: str | None = None) -> None:
        shard = self._shard(tenant, create=False)
        if shard is None:
            return
        must: list[Any] = []
        must_not: list[Any] = []
        if resolution_key is not None:
            must.append(qe.FieldCondition("resolution_key", match=qe.MatchValue(resolution_key)))
        if before_ms is not None:
            must.append(qe.FieldCondition("created_at", range=qe.RangeFloat(lte=float(before_ms))))
        if keep_kb_version is not None:
            must_not.append(qe.FieldCondition("kb_version", match=qe.MatchValue(keep_kb_version)))
        flt = qe.Filter(must=must or None, must_not=must_not or None)
        if not must and not must_not:
            flt = qe.Filter(must=[qe.FieldCondition("created_at", range=qe.RangeFloat(gte=0.0))])
        shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def delete_expired(self, tenant: str, now_ms: int) -> None:
        shard = self._shard(tenant, create=False)
        if shard is not None:
            flt = qe.Filter(must=[qe.FieldCondition("expires_at", range=qe.RangeFloat(lte=float(now_ms)))])
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def count(self, tenant: str) -> int:
        shard = self._shard(tenant, create=False)
        return 0 if shard is None else int(shard.count(qe.CountRequest(exact=True)))

    def tenants(self) -> list[str]:
        return sorted(p.read_text() for p in self.root.glob("*/tenant"))

    def optimize(self) -> None:
        """Build the HNSW index of segments past the indexing threshold (blocking)."""
        with self._lock:
            shards = list(self._shards.values())
        for shard in shards:
            shard.optimize()

    def flush(self) -> None:
        with self._lock:
            shards = list(self._shards.values())
        for shard in shards:
            shard.flush()

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
