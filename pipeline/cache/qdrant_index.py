"""Qdrant server adapter (``qdrant-client``): one collection, a tenant filter no caller can omit.

All tenants share a collection (Qdrant's recommended multitenancy: a keyword payload index
with ``is_tenant``); every operation here builds its filter from the tenant argument first,
so no code path reaches another tenant's points. The same adapter runs against
``qdrant-client``'s local mode (``location=":memory:"`` or a path) for the contract tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models

from pipeline.cache.index import DECISION_FIELDS, StoredEntry, confirmation_payload, neighbour_from_payload, point_id
from pipeline.cache.policy import Neighbour
from pipeline.faults import adapter


@adapter("qdrant")
class QdrantServerIndex:
    def __init__(self, client: QdrantClient, collection: str, dim: int) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        if not client.collection_exists(collection):
            client.create_collection(collection, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.COSINE))
            client.create_payload_index(collection, "tenant", models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=True))
            for field in ("expires_at", "created_at"):
                client.create_payload_index(collection, field, models.PayloadSchemaType.INTEGER)
            for field in ("kb_version", "resolution_key"):
                client.create_payload_index(collection, field, models.PayloadSchemaType.KEYWORD)

    @staticmethod
    def _tenant(tenant: str, *more: Any, must_not: Sequence[Any] = ()) -> models.Filter:
        conditions = [models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)), *more]
        return models.Filter(must=conditions, must_not=list(must_not) or None)

    def upsert(self, tenant: str, entries: Sequence[StoredEntry], vectors: npt.NDArray[np.float32]) -> None:
        if not entries:
            return
        points = [models.PointStruct(id=point_id(tenant, e.entry_id), vector=v.tolist(), payload=e.payload(tenant))
                  for e, v in zip(entries, vectors, strict=True)]
        self.client.upsert(self.collection, points=points, wait=True)

    def search(self, tenant: str, vectors: npt.NDArray[np.float32], limit: int, now_ms: int,
               kb_version: str) -> list[list[Neighbour]]:
        if len(vectors) == 0:
            return []
        flt = self._tenant(tenant, models.FieldCondition(key="expires_at", range=models.Range(gt=now_ms)),
                           models.FieldCondition(key="kb_version", match=models.MatchValue(value=kb_version)))
        requests = [models.QueryRequest(query=v.tolist(), filter=flt, limit=limit, with_payload=list(DECISION_FIELDS))
                    for v in vectors]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[neighbour_from_payload(p.score, p.payload or {}) for p in r.points] for r in responses]

    def answer(self, tenant: str, entry_id: str) -> str | None:
        records = self.client.retrieve(self.collection, [point_id(tenant, entry_id)], with_payload=["answer", "tenant"])
        if not records or (records[0].payload or {}).get("tenant") != tenant:
            return None
        return str((records[0].payload or {})["answer"])

    def confirm(self, tenant: str, entry_id: str, source: str) -> None:
        # The tenant condition keeps the change inside the tenant's partition.
        self.client.set_payload(self.collection, payload=confirmation_payload(source), points=models.FilterSelector(
            filter=self._tenant(tenant, models.FieldCondition(key="entry_id", match=models.MatchValue(value=entry_id)),
                                must_not=[models.FieldCondition(key="trusted", match=models.MatchValue(value=True))])),
            wait=True)

    def delete(self, tenant: str, entry_id: str) -> None:
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=self._tenant(
            tenant, models.FieldCondition(key="entry_id", match=models.MatchValue(value=entry_id)))), wait=True)

    def purge(self, tenant: str, resolution_key: str | None = None, before_ms: int | None = None,
              keep_kb_version: str | None = None) -> None:
        more: list[Any] = []
        if resolution_key is not None:
            more.append(models.FieldCondition(key="resolution_key", match=models.MatchValue(value=resolution_key)))
        if before_ms is not None:
            more.append(models.FieldCondition(key="created_at", range=models.Range(lte=before_ms)))
        must_not = []
        if keep_kb_version is not None:
            must_not.append(models.FieldCondition(key="kb_version", match=models.MatchValue(value=keep_kb_version)))
        self.client.delete(self.collection, points_selector=models.FilterSelector(
            filter=self._tenant(tenant, *more, must_not=must_not)), wait=True)

    def delete_expired(self, tenant: str, now_ms: int) -> None:
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=self._tenant(
            tenant, models.FieldCondition(key="expires_at", range=models.Range(lte=now_ms)))), wait=True)

    def count(self, tenant: str) -> int:
        return int(self.client.count(self.collection, count_filter=self._tenant(tenant), exact=True).count)

    def tenants(self) -> list[str]:
        seen: set[str] = set()
        offset: Any = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=1000, offset=offset,
                                                with_payload=["tenant"], with_vectors=False)
            seen.update(str((p.payload or {})["tenant"]) for p in points)
            if offset is None:
                return sorted(seen)

    def flush(self) -> None:
        """Writes are acknowledged by the server (``wait=True``); nothing to flush."""

    def close(self) -> None:
        self.client.close()
