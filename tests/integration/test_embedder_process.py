"""The worker's encoder in its own process: the same vectors as in-process, and a child that
dies is a transient fault followed by a fresh child, never a wrong or a lost vector."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from pipeline.cache.embedder import SentenceTransformerEmbedder
from pipeline.cache.embedder_process import EmbedderProcess, EmbedderProcesses
from pipeline.datasets import banking77_split
from pipeline.errors import TransientError


@pytest.fixture(scope="module")
def texts() -> list[str]:
    _, held = banking77_split()
    return [q.text for q in held[:40]]


def test_the_child_encodes_what_the_worker_would_and_the_same_text_alike_in_any_batch(texts: list[str]) -> None:
    here = SentenceTransformerEmbedder()
    child = EmbedderProcess()
    try:
        assert (child.name, child.dim) == (here.name, here.dim)
        together = child.encode(texts)
        assert together.shape == (len(texts), here.dim) and together.dtype == np.float32
        np.testing.assert_array_equal(together, here.encode(texts))
        alone = np.vstack([child.encode([t]) for t in texts[:5]])
        np.testing.assert_array_equal(alone, together[:5])
        assert child.encode([]).shape == (0, here.dim)
    finally:
        child.close()


def test_a_killed_child_is_a_transient_fault_and_the_next_batch_gets_a_new_one(texts: list[str]) -> None:
    child = EmbedderProcess()
    try:
        before = child.encode(texts[:3])
        assert child._process is not None and child._process.pid is not None
        first = child._process.pid
        os.kill(first, signal.SIGKILL)
        child._process.join(timeout=10)
        with pytest.raises(TransientError):
            child.encode(texts[:3])
        np.testing.assert_array_equal(child.encode(texts[:3]), before)
        assert child._process is not None and child._process.pid != first
    finally:
        child.close()


def test_several_processes_deal_a_batch_out_and_give_the_same_rows_in_order(texts: list[str]) -> None:
    here = SentenceTransformerEmbedder()
    pool = EmbedderProcesses(3)
    try:
        assert (pool.name, pool.dim) == (here.name, here.dim)
        np.testing.assert_array_equal(pool.encode(texts), here.encode(texts))
        np.testing.assert_array_equal(pool.encode(texts[:2]), here.encode(texts[:2]))  # fewer texts than processes
        assert pool.encode([]).shape == (0, here.dim)
        pids = {c._process.pid for c in pool._children if c._process is not None}
        assert len(pids) == 3
    finally:
        pool.close()


def test_one_killed_process_of_several_is_a_transient_fault_and_is_replaced(texts: list[str]) -> None:
    pool = EmbedderProcesses(2)
    try:
        before = pool.encode(texts[:6])
        victim = pool._children[1]._process
        assert victim is not None and victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        with pytest.raises(TransientError):
            pool.encode(texts[:6])
        np.testing.assert_array_equal(pool.encode(texts[:6]), before)  # no reply left behind in a pipe
        assert pool._children[1]._process is not None and pool._children[1]._process.pid != victim.pid
    finally:
        pool.close()
