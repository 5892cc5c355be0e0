"""One contract for both vector index adapters: Qdrant Edge (embedded default) and a Qdrant
server through qdrant-client (run here against qdrant-client's local mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import QdrantClient

from pipeline.cache.edge_index import EdgeIndex
from pipeline.cache.index import StoredEntry, VectorIndex
from pipeline.cache.qdrant_index import QdrantServerIndex

DIM = 8
NOW = 1_700_000_000_000
LATER = NOW + 3_600_000


def unit(*values: float) -> npt.NDArray[np.float32]:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return np.asarray(v / np.linalg.norm(v), dtype=np.float32)


def entry(entry_id: str, key: str, kb: str = "1", created: int = NOW - 1000, expires: int = LATER) -> StoredEntry:
    return StoredEntry(entry_id, f"text {entry_id}", f"answer {entry_id}", key, kb, created, expires)


@pytest.fixture(params=["edge", "qdrant-client"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    made: VectorIndex
    if request.param == "edge":
        made = EdgeIndex(tmp_path / "edge", DIM)
    else:
        made = QdrantServerIndex(QdrantClient(location=":memory:"), "contract", DIM)
    yield made
    made.close()


def search(index: VectorIndex, tenant: str, vector: npt.NDArray[np.float32], kb: str = "1",
           now: int = NOW) -> list[str]:
    return [n.entry_id for n in index.search(tenant, vector[None, :], 10, now, kb)[0]]


def test_nearest_first_with_cosine_similarity(index: VectorIndex) -> None:
    index.upsert("acme", [entry("a", "k1"), entry("b", "k2")], np.stack([unit(1, 0), unit(1, 1)]))
    found = index.search("acme", unit(1, 0.1)[None, :], 10, NOW, "1")[0]
    assert [n.entry_id for n in found] == ["a", "b"]
    assert found[0].similarity == pytest.approx(float(unit(1, 0.1) @ unit(1, 0)), abs=1e-4)
    assert found[0].resolution_key == "k1" and found[0].text == "text a"
    assert index.answer("acme", "a") == "answer a"  # answers are fetched for hits only


def test_answers_are_partitioned_too(index: VectorIndex) -> None:
    index.upsert("acme", [entry("a", "k")], unit(1)[None, :])
    assert index.answer("acme", "a") == "answer a"
    assert index.answer("globex", "a") is None and index.answer("acme", "missing") is None


def test_tenants_are_hard_partitions(index: VectorIndex) -> None:
    index.upsert("acme", [entry("a", "k")], unit(1, 0)[None, :])
    index.upsert("globex", [entry("g", "k")], unit(1, 0)[None, :])
    assert search(index, "acme", unit(1, 0)) == ["a"]
    assert search(index, "globex", unit(1, 0)) == ["g"]
    assert search(index, "initech", unit(1, 0)) == []
    assert index.count("acme") == 1 and sorted(index.tenants()) == ["acme", "globex"]


def test_expired_entries_are_never_returned(index: VectorIndex) -> None:
    index.upsert("acme", [entry("old", "k", expires=NOW - 1), entry("new", "k")], np.stack([unit(1), unit(1)]))
    assert search(index, "acme", unit(1)) == ["new"]
    assert search(index, "acme", unit(1), now=LATER + 1) == []
    index.delete_expired("acme", NOW)
    assert index.count("acme") == 1


def test_only_the_current_knowledge_base_version_is_served(index: VectorIndex) -> None:
    index.upsert("acme", [entry("v1", "k", kb="1"), entry("v2", "k", kb="2")], np.stack([unit(1), unit(1)]))
    assert search(index, "acme", unit(1), kb="1") == ["v1"]
    assert search(index, "acme", unit(1), kb="2") == ["v2"]
    index.purge("acme", before_ms=NOW, keep_kb_version="2")
    assert index.count("acme") == 1 and search(index, "acme", unit(1), kb="2") == ["v2"]


def test_purge_by_key_and_whole_tenant(index: VectorIndex) -> None:
    index.upsert("acme", [entry("a", "k1"), entry("b", "k2")], np.stack([unit(1), unit(1, 1)]))
    index.upsert("globex", [entry("g", "k1")], unit(1)[None, :])
    index.purge("acme", resolution_key="k1")
    assert search(index, "acme", unit(1)) == ["b"] and index.count("globex") == 1
    index.purge("acme")
    assert index.count("acme") == 0 and index.count("globex") == 1


def test_purge_spares_entries_created_after_it(index: VectorIndex) -> None:
    index.upsert("acme", [entry("before", "k", created=NOW - 10), entry("after", "k", created=NOW + 10)],
                 np.stack([unit(1), unit(1)]))
    index.purge("acme", before_ms=NOW)
    assert search(index, "acme", unit(1)) == ["after"]


def test_writing_an_entry_again_keeps_one_point(index: VectorIndex) -> None:
    for _ in range(3):
        index.upsert("acme", [entry("a", "k")], unit(1)[None, :])
    index.flush()
    assert index.count("acme") == 1


def test_edge_shards_survive_a_restart(tmp_path: Path) -> None:
    first = EdgeIndex(tmp_path / "edge", DIM)
    first.upsert("acme", [entry("a", "k")], unit(1)[None, :])
    first.close()
    second = EdgeIndex(tmp_path / "edge", DIM)
    assert search(second, "acme", unit(1)) == ["a"] and second.tenants() == ["acme"]
    second.close()
