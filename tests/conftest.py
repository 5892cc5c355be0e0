"""Shared fixtures. Integration tiers get real Kafka and Redis, started once per session.

When TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS / TICKETFLOW_REDIS_URL are set, those are used;
otherwise the local broker and redis-server are started (and stopped again at the end if
this session started them). A missing service fails the tests that need it: never a skip.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from pipeline import services
from pipeline.admin import apply_topics, delete_topics
from pipeline.cache.embedder import MicroBatcher
from pipeline.cache.factory import build_embedder
from pipeline.settings import REPO_ROOT, Settings, load_settings


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings(state_dir=REPO_ROOT / ".ticketflow", sim_time_scale=0.05)


@pytest.fixture(scope="session")
def live_services(base_settings: Settings) -> Iterator[Settings]:
    ours_before = {s.name for s in services.status(base_settings) if s.running and s.managed}
    # Raises ServiceError (a test error, not a skip) when a service cannot be had. A service
    # already answering on the local port (another checkout's) is adopted, not fought over.
    ours_now = {s.name for s in services.up(base_settings, adopt=True) if s.managed}
    # The first start of a cache worker exports the model to ONNX (once per state directory);
    # do it here, so that no test's worker spends its start-up time on it.
    build_embedder(base_settings).close()
    yield base_settings
    for svc in services.services(base_settings):
        if svc.name in ours_now - ours_before:
            svc.down()


@pytest.fixture
def settings(live_services: Settings) -> Iterator[Settings]:
    """Settings with a fresh topic prefix (so consumer groups too) and its topics applied;
    the topics are deleted afterwards, so partitions do not pile up on the broker."""
    fresh = live_services.model_copy(update={"topic_prefix": f"test-{uuid.uuid4().hex[:10]}."})
    apply_topics(fresh)
    yield fresh
    delete_topics(fresh)
    # the embedded cache replicas of this test's workers (named after the prefix)
    for replica in (fresh.state_dir / "cache").glob(f"{fresh.topic_prefix}*"):
        shutil.rmtree(replica, ignore_errors=True)


@pytest.fixture(scope="session")
def embedder(base_settings: Settings) -> Iterator[MicroBatcher]:
    """The real model (the default backend), loaded once per session."""
    batcher = build_embedder(base_settings)
    yield batcher
    batcher.close()
