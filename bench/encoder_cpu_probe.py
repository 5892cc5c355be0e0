"""CPU a text for two things a worker does with every ticket: counting tokens and encoding.

``tokens``: the simulated provider's replies (their JSON, with a drawn confidence) counted by
the tokenizer whole (``encoded_tokens``) and by ``count_tokens`` (word by word on plain text),
microseconds a reply, over 3,000 banking77 texts.

``graph``: the int8 and fp32 ONNX encoders as the worker builds them, against onnxruntime's
transformer optimizer's fused graph (attention, layer norm, GELU fused; then quantized the
same way), one text a call as the worker runs them: CPU ms a text and the cosine to fp32.

    PYTHONPATH=. .venv/bin/python bench/encoder_cpu_probe.py [tokens] [graph]
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.datasets import banking77_sample


def tokens() -> None:
    from pipeline.llm.tokens import count_tokens, encoded_tokens

    rng = random.Random(3)
    replies = [json.dumps({"resolution_key": "card_arrival", "confidence": round(rng.random(), 2), "answer":
                           "Thank you for reaching out about this. Here is what applies to your case (card "
                           f"arrival). I checked your account: {q.text} If anything is still unclear, reply"})
               for q in banking77_sample(3000, seed=3)]
    for name, count in (("whole text (encoded_tokens)", encoded_tokens), ("count_tokens", count_tokens)):
        started = time.perf_counter()
        for reply in replies:
            count(reply)
        print(f"tokens: {name}: {1e6 * (time.perf_counter() - started) / len(replies):.1f} us a reply", flush=True)


def graph() -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    from pipeline.cache.embedder import SentenceTransformerEmbedder
    from pipeline.settings import load_settings

    models = load_settings().state_dir / "models"
    embedder = SentenceTransformerEmbedder(backend="onnx-int8", threads=1, export_dir=models)  # builds the files
    base = next(p for p in models.glob("*.onnx") if not p.stem.endswith("-int8"))
    texts = [q.text for q in banking77_sample(600, seed=21)]
    with tempfile.TemporaryDirectory() as tmp:
        fused, fused8 = Path(tmp) / "fused.onnx", Path(tmp) / "fused-int8.onnx"
        optimizer.optimize_model(str(base), model_type="bert", num_heads=12, hidden_size=384,
                                 opt_level=1).save_model_to_file(str(fused))
        quantize_dynamic(str(fused), str(fused8), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

        def session(path: Path) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def encode(s: ort.InferenceSession, batch: list[str]) -> np.ndarray:
            names = {i.name for i in s.get_inputs()}
            rows = []
            for encoding in embedder._tokenizer.encode_batch(batch):
                ids = np.array([encoding.ids], dtype=np.int64)
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
                row = s.run(None, {k: v for k, v in feeds.items() if k in names})[0][0].mean(axis=0)
                rows.append(row / np.linalg.norm(row))
            return np.array(rows)

        reference = encode(session(base), texts)
        for name, path in (("int8 (the worker's)", base.with_name(base.stem + "-int8.onnx")), ("fp32", base),
                           ("fused fp32", fused), ("fused int8", fused8)):
            s = session(path)
            encode(s, texts[:50])
            started = time.process_time()
            vectors = encode(s, texts)
            cpu = 1000 * (time.process_time() - started) / len(texts)
            cosine = (vectors * reference).sum(axis=1)
            print(f"graph: {name}: {cpu:.2f} ms CPU a text, cosine to fp32 min {cosine.min():.4f} "
                  f"mean {cosine.mean():.4f}", flush=True)


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = sys.argv[1:] or ["tokens", "graph"]
    for name in wanted:
        {"tokens": tokens, "graph": graph}[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
