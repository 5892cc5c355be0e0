"""Build the semantic cache a worker or a command uses, from the settings."""

from __future__ import annotations

import logging
import threading

from pipeline.cache.embedder import Embedder, MicroBatcher, SentenceTransformerEmbedder
from pipeline.cache.embedder_process import EmbedderProcess, EmbedderProcesses
from pipeline.cache.index import VectorIndex
from pipeline.cache.metrics import CacheMetrics
from pipeline.cache.semantic_cache import KbVersions, PolicyBook, PolicyLevels, SecondOpinions, SemanticCache
from pipeline.processing import SystemClock
from pipeline.settings import Settings

log = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 60.0


def build_embedder(settings: Settings, in_worker: bool = False) -> MicroBatcher:
    """The encoder behind a micro-batcher; in a worker (``in_worker``), in a process of its own
    unless TICKETFLOW_EMBEDDING_PROCESS=false (pipeline/cache/embedder_process.py)."""
    backend, models = settings.embedding_backend, settings.state_dir / "models"
    threads = settings.embedding_threads or settings.native_threads
    embedder: Embedder
    if not (in_worker and settings.embedding_process and backend != "torch"):
        embedder = SentenceTransformerEmbedder(backend=backend, export_dir=models, threads=threads)
    elif settings.embedding_processes > 1:
        embedder = EmbedderProcesses(settings.embedding_processes, backend=backend, export_dir=models, threads=threads)
    else:
        embedder = EmbedderProcess(backend=backend, export_dir=models, threads=threads)
    return MicroBatcher(embedder, settings.embedding_max_batch, settings.embedding_max_wait_ms)


def build_index(settings: Settings, instance_id: str, dim: int) -> VectorIndex:
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from pipeline.cache.qdrant_index import QdrantServerIndex

        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantServerIndex(QdrantClient(url=settings.qdrant_url, api_key=key),
                                 f"{settings.topic_prefix}{settings.qdrant_collection}", dim)
    from pipeline.cache.edge_index import EdgeIndex

    return EdgeIndex(settings.state_dir.resolve() / "cache" / f"{settings.topic_prefix}{instance_id}", dim)


def build_cache(settings: Settings, instance_id: str, kb_versions: KbVersions,
                metrics: CacheMetrics | None = None, embedder: MicroBatcher | None = None,
                opinions: SecondOpinions | None = None, levels: PolicyLevels | None = None) -> SemanticCache:
    embedder = embedder or build_embedder(settings)
    cache = SemanticCache(embedder, build_index(settings, instance_id, embedder.dim), SystemClock(),
                          PolicyBook.load(settings.cache_policy_file), kb_versions, metrics, settings.cache_ttl_s,
                          opinions=opinions, levels=levels)
    stop = threading.Event()

    def upkeep() -> None:
        while not stop.is_set():
            cache.upkeep_due.wait(SWEEP_INTERVAL_S)
            cache.upkeep_due.clear()
            if stop.is_set():
                return
            try:
                cache.maintain()
            except Exception:  # upkeep must not kill the worker; the next round tries again
                log.exception("cache upkeep failed")

    cache.sweep()
    threading.Thread(target=upkeep, name="ticketflow-cache-upkeep", daemon=True).start()
    def stop_upkeep() -> None:
        stop.set()
        cache.upkeep_due.set()

    cache.on_close(stop_upkeep)
    return cache
