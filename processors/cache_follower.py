"""Cache follower: apply ``cache.updates`` to this worker's vector index.

With the embedded Qdrant Edge every cache worker process owns a replica, and its follower
reads the whole topic in a consumer group of its own (``cache-index.<instance>``), so each
replica sees every update; a new replica rebuilds from the topic. With a Qdrant server the
followers share one group and each update is applied once. Updates are applied and the
index flushed in ``prepare``, before the batch's offsets are committed; upserts are keyed
by entry id, so a batch applied twice after a crash changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.cache.semantic_cache import SemanticCache, missing_fields
from pipeline.events import CacheUpdate
from pipeline.processing import Emit, Failure, Outcome


def problem(update: CacheUpdate) -> str | None:
    if not update.tenant_id:
        return "tenant_id is empty"
    if update.op == "upsert":
        missing = missing_fields(update)
        if missing:
            return f"upsert lacks {', '.join(missing)}"
    return None


class CacheFollower:
    def __init__(self, cache: SemanticCache, name: str) -> None:
        self.cache = cache
        self.name = name

    def handle_batch(self, batch: Sequence[tuple[CacheUpdate, str]]) -> list[Outcome]:
        """The batch's valid updates applied to this worker's index at once."""
        problems = [problem(update) for update, _ in batch]
        valid = [update for (update, _), why in zip(batch, problems, strict=True) if why is None]
        if valid:
            self.cache.apply(valid)
        return [Emit((), note=update.op) if why is None else Failure("InvalidCacheUpdate", why)
                for (update, _), why in zip(batch, problems, strict=True)]
