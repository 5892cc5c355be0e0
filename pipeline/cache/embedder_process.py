"""The encoder in a process of its own: the worker's other threads no longer slow it down.

A worker runs every processor as a thread of one Python process. The encoder runs one ONNX
call per text (pipeline/cache/embedder.py says why), and after each call its thread needs the
GIL back, which the busy agent, router and Kafka threads hold for up to the switch interval:
at 100 tickets/s a text took about 8 ms of wall time for 2 ms of work, and the cache stage
fell behind (README, Benchmark). Here the worker's embedder thread sends a whole batch to a
child process and waits on the pipe once; the child, alone with its interpreter, encodes the
batch and sends the rows back.

The child is started with ``spawn`` (never ``fork`` under librdkafka's threads). It exits when
the pipe closes, so a worker killed with ``kill -9`` leaves none behind; a child that died is
started again on the next batch, and the batch in flight fails as a transient fault (the
record is retried, never dead-lettered).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.embedder import Backend, Vectors
from pipeline.errors import ConfigurationError, PermanentError, TicketflowError, TransientError

log = logging.getLogger(__name__)


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    """The child: build the encoder, then encode each batch received until the pipe closes."""
    from pipeline.cache.embedder import SentenceTransformerEmbedder

    try:
        embedder = SentenceTransformerEmbedder(**options)
    except Exception as exc:
        conn.send(("error", "permanent", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", embedder.name, embedder.dim))
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone
        try:
            conn.send(("ok", embedder.encode(texts)))
        except TicketflowError as exc:
            kind = "transient" if exc.retryable else "permanent"
            conn.send(("error", kind, str(exc)))
        except Exception as exc:
            conn.send(("error", "permanent", f"{type(exc).__name__}: {exc}"))


class EmbedderProcess:
    """An :class:`~pipeline.cache.embedder.Embedder` whose model runs in a child process."""

    def __init__(self, model_path: Path | None = None, backend: Backend = "onnx-int8",
                 export_dir: Path | None = None, threads: int | None = None, start_timeout_s: float = 300) -> None:
        self._options = {"model_path": model_path, "backend": backend, "export_dir": export_dir, "threads": threads}
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.name, self.dim = self._start()

    def _start(self) -> tuple[str, int]:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, self._options), name="ticketflow-encoder",
                                  daemon=True)
        process.start()
        child.close()
        if not parent.poll(self._start_timeout_s):
            process.kill()
            raise TransientError("the encoder process did not start in time", "embedder")
        try:
            reply = parent.recv()
        except EOFError as exc:
            raise TransientError(f"the encoder process exited at start (code {process.exitcode})",
                                 "embedder") from exc
        if reply[0] == "error":
            raise ConfigurationError(f"the encoder process failed to start: {reply[2]}")
        self._conn, self._process = parent, process
        log.info("encoder process %d: %s", process.pid, reply[1])
        return str(reply[1]), int(reply[2])

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._conn is None:
                self._start()
            assert self._conn is not None
            try:
                self._conn.send(list(texts))
                reply = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._discard()
                raise TransientError(f"the encoder process died: {exc or type(exc).__name__}", "embedder") from exc
        if reply[0] == "ok":
            return np.asarray(reply[1], dtype=np.float32)
        if reply[1] == "transient":
            raise TransientError(reply[2], "embedder")
        raise PermanentError(reply[2])

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.join(timeout=1)
            if self._process.is_alive():
                self._process.kill()
        self._conn = self._process = None

    def close(self) -> None:
        with self._lock:
            self._discard()


class EmbedderProcesses:
    """Several encoder processes: each batch is dealt out among them and encoded in parallel.

    At 100 tickets/s the cache stage's thread spent 43 % of its wall time waiting for its one
    encoder process (py-spy ``--idle``), one text after another, while the machine's two cores
    were not both busy. The texts are dealt round-robin (a batch comes sorted by length, so
    each process gets a like share of long and short ones); each process is an
    :class:`EmbedderProcess` (restarted alone when it dies). Every text is still encoded
    alone, so its vector does not depend on how the batch was split."""

    def __init__(self, processes: int, model_path: Path | None = None, backend: Backend = "onnx-int8",
                 export_dir: Path | None = None, threads: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if processes < 1:
            raise ConfigurationError("at least one encoder process is needed")
        self._children = [EmbedderProcess(model_path, backend, export_dir, threads) for _ in range(processes)]
        self.name, self.dim = self._children[0].name, self._children[0].dim
        self._helpers = ThreadPoolExecutor(max(1, processes - 1), thread_name_prefix="ticketflow-encoder-io")

    def encode(self, texts: Sequence[str]) -> Vectors:
        n = min(len(self._children), len(texts))
        if n <= 1:
            return self._children[0].encode(texts)
        shares = [list(texts[i::n]) for i in range(n)]
        futures = [self._helpers.submit(child.encode, share)
                   for child, share in zip(self._children[1:n], shares[1:], strict=True)]
        try:
            first = self._children[0].encode(shares[0])
        finally:
            done = [f.exception() for f in futures]  # every process answers before any failure is raised
        for error in done:
            if error is not None:
                raise error
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[0::n] = first
        for i, future in enumerate(futures, start=1):
            out[i::n] = future.result()
        return out

    def close(self) -> None:
        for child in self._children:
            child.close()
        self._helpers.shutdown(wait=False)
