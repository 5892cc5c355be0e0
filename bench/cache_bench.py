"""Benchmark of the semantic cache stage. Ratios and percentiles, not timed unit tests.

1. encode: the raw model's throughput, per backend (torch, onnx, onnx-int8), texts/s, in
   chunks of 32 banking77 queries (length-sorted, as the micro-batcher does); and the encoder
   exactly as a worker's cache stage runs it (`worker-encoder`: the default backend in a
   child process, pipeline/cache/embedder_process.py, one text per ONNX call).
2. stage: the cache processor through Kafka: N tickets pre-loaded on tickets.accepted, one
   worker process running `cache` (lookup + follower) against a tenant seeded with the
   banking77 tune split; tickets/s between the first and the last output a read_committed
   reader sees (tickets.responses + tickets.uncached). Reported with its ratio to (1): to
   the worker's own encoder (issue 14's "cache stage >= 0.8 of the encoder it uses"), to the
   default backend in this process and to torch; and the worker's peak resident memory (VmHWM).
3. lookup: index search + hit decision per query (embedding excluded) in one tenant of
   100,000 entries in Qdrant Edge, after its HNSW index is built: p50/p95/p99 ms.

    ./run ticketflow services up
    PYTHONPATH=. .venv/bin/python bench/cache_bench.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import services
from pipeline.admin import apply_topics, delete_topics
from pipeline.cache.edge_index import EdgeIndex
from pipeline.cache.embedder import BACKENDS, MicroBatcher, SentenceTransformerEmbedder
from pipeline.cache.factory import build_embedder
from pipeline.cache.index import StoredEntry
from pipeline.cache.policy import HitPolicy, decide
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_split
from pipeline.demo import percentile
from pipeline.events import CacheUpdate, TicketSubmitted, to_record
from pipeline.pii import redact
from pipeline.settings import Settings, load_settings
from pipeline.topic_reader import TopicReader
from tests.helpers import WorkerProcess


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def encode_throughput(settings: Settings, texts: list[str], repeat: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for backend in BACKENDS:
        embedder = SentenceTransformerEmbedder(backend=backend, export_dir=settings.state_dir / "models")
        batcher = MicroBatcher(embedder, chunk=32)
        batcher.encode_sorted(texts[:64])  # warm-up
        rates = []
        for _ in range(repeat):
            started = time.perf_counter()
            batcher.encode_sorted(texts)
            rates.append(len(texts) / (time.perf_counter() - started))
        batcher.close()
        results[backend] = float(np.median(rates))
        say(f"encode {backend}: {results[backend]:.0f} texts/s (median of {repeat})")
    results[WORKER_ENCODER] = worker_encoder_throughput(settings, texts, repeat)
    return results


#: the encoder as a worker's cache stage runs it (build_embedder(in_worker=True))
WORKER_ENCODER = "worker-encoder"


def worker_encoder_throughput(settings: Settings, texts: list[str], repeat: int) -> float:
    """Texts/s of the encoder a worker's cache stage uses: the same factory, the same child
    process, the same micro-batcher, fed batches of 64 as the stage hands them over."""
    batcher = build_embedder(settings, in_worker=True)
    try:
        batcher.encode_sorted(texts[:64])  # warm-up (the child's first calls)
        rates = []
        for _ in range(repeat):
            started = time.perf_counter()
            for start in range(0, len(texts), 64):
                batcher.encode(texts[start:start + 64])
            rates.append(len(texts) / (time.perf_counter() - started))
    finally:
        batcher.close()
    rate = float(np.median(rates))
    say(f"encode {WORKER_ENCODER} ({settings.embedding_backend}, a child process, one text per call): "
        f"{rate:.0f} texts/s (median of {repeat})")
    return rate


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def accepted(client: TicketflowClient, ticket_id: str, text: str, now: int) -> None:
    topic = client.topic("tickets.accepted")
    ticket = TicketSubmitted(ticket_id=ticket_id, tenant_id="bench", body=text, cache_text=redact(text),
                             created_at=now)
    client.send_raw(topic, ticket_id.encode(), client.serde.encode("TicketSubmitted", to_record(ticket)))


def wait_for_seeds(fresh: Settings, client: TicketflowClient, last_text: str, timeout_s: float = 300) -> None:
    """The tenant's updates are applied in order: once the last seed row hits, all are in."""
    deadline = time.monotonic() + timeout_s
    with TopicReader(fresh.kafka_common(), client.topic("tickets.responses")) as responses:
        attempt = 0
        while time.monotonic() < deadline:
            accepted(client, f"probe-{attempt}", last_text, int(time.time() * 1000))
            client.flush()
            attempt += 1
            until = time.monotonic() + 2
            while time.monotonic() < until:
                if responses.poll(timeout_s=0.1):
                    return
    raise RuntimeError("the cache worker did not load the seed entries in time")


def stage_throughput(settings: Settings, n: int, log_dir: Path) -> dict[str, Any]:
    tune, holdout = banking77_split()
    fresh = settings.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}."})
    apply_topics(fresh)
    try:
        client = TicketflowClient(fresh)
        worker = WorkerProcess(fresh, log_dir / "cache-bench-worker.log", "cache").start()
        assert worker.proc is not None
        now = int(time.time() * 1000)
        client.cache_updates(CacheUpdate(tenant_id="bench", op="upsert", created_at=now, entry_id=f"s{i}",
                                         text=redact(r.text), answer=f"answer {r.label}", resolution_key=r.label,
                                         kb_version="1", expires_at=now + 86_400_000) for i, r in enumerate(tune))
        say(f"stage: {len(tune)} entries sent; waiting for the cache worker to load them")
        wait_for_seeds(fresh, client, tune[-1].text)
        stamps: list[int] = []
        hits = 0
        try:
            with TopicReader(fresh.kafka_common(), client.topic("tickets.responses")) as responses, \
                    TopicReader(fresh.kafka_common(), client.topic("tickets.uncached")) as uncached:
                for i in range(n):
                    accepted(client, f"b{i}", holdout[i % len(holdout)].text, now)
                client.flush()
                say(f"stage: {n} tickets loaded")
                deadline = time.monotonic() + 900
                while len(stamps) < n and time.monotonic() < deadline:
                    for reader, is_hit in ((responses, True), (uncached, False)):
                        for message in reader.poll(timeout_s=0.05):
                            key = message.key() or b""
                            if not key.startswith(b"b") or b"#" in key:
                                continue  # a probe, or an audit's copy of a hit (not a ticket)
                            stamps.append(message.timestamp()[1])
                            hits += is_hit
                            if len(stamps) % 1000 == 0:
                                say(f"  stage: {len(stamps)}/{n}")
            rss = peak_rss_mb(worker.proc.pid)
        finally:
            worker.stop()
        stamps.sort()
        span_s = (stamps[-1] - stamps[0]) / 1000
        return {"tickets": n, "outputs": len(stamps), "hits": hits, "seconds": span_s,
                "tickets_per_s": (len(stamps) - 1) / span_s if span_s > 0 else float("nan"),
                "worker_peak_rss_mb": rss, "seed_entries": len(tune)}
    finally:
        delete_topics(fresh)


def lookup_latency(settings: Settings, entries: int, queries: int) -> dict[str, Any]:
    tune, holdout = banking77_split()
    embedder = MicroBatcher(SentenceTransformerEmbedder(export_dir=settings.state_dir / "models"))
    base = embedder.encode_sorted([redact(r.text) for r in tune])
    probe = embedder.encode_sorted([redact(r.text) for r in holdout[:queries]])
    embedder.close()
    rng = np.random.default_rng(1)
    policy = HitPolicy()
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as root:
        index = EdgeIndex(Path(root), base.shape[1])
        started = time.perf_counter()
        for start in range(0, entries, 5000):
            rows = np.arange(start, min(start + 5000, entries))
            source = rows % len(tune)
            # Paraphrase-like neighbours: the real vectors, jittered, renormalised.
            vectors = base[source] + rng.normal(0, 0.02, (len(rows), base.shape[1])).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index.upsert("big", [StoredEntry(f"e{i}", tune[s].text, "answer", tune[s].label, "1", 0, 2**62)
                                 for i, s in zip(rows, source, strict=True)], vectors.astype(np.float32))
            say(f"  lookup: {min(start + 5000, entries)}/{entries} entries")
        index.optimize()
        load_s = time.perf_counter() - started
        now = int(time.time() * 1000)
        for vector in probe[:50]:  # warm-up
            index.search("big", vector[None, :], policy.k, now, "1")
        latencies = []
        for text, vector in zip(holdout, probe, strict=False):
            t0 = time.perf_counter()
            found = index.search("big", vector[None, :], policy.k, now, "1")[0]
            decide(policy, text.text, found)
            latencies.append((time.perf_counter() - t0) * 1000)
        count = index.count("big")
        index.close()
    return {"entries": count, "queries": len(latencies), "load_and_index_s": round(load_s, 1),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "latencies_ms": latencies}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    names = [*report["encode_texts_per_s"], "cache stage\n(onnx-int8, Kafka)"]
    values = [*report["encode_texts_per_s"].values(), report["stage"]["tickets_per_s"]]
    colors = ["C1" if name == WORKER_ENCODER else "C0" if name == "torch" else "C7"
              for name in report["encode_texts_per_s"]]
    bars = left.bar(names, values, color=[*colors, "C2"])
    left.bar_label(bars, fmt="%.0f")
    left.axhline(400, color="grey", ls="--", lw=0.8, label="target 400 tickets/s")
    left.set_ylabel("texts (tickets) per second")
    left.set_title(f"Encoders vs the cache stage through Kafka: ratio to the worker's encoder "
                   f"{report['stage_to_worker_encoder_ratio']:.2f}\n(to onnx-int8 in-process "
                   f"{report['stage_to_encode_ratio']:.2f}, to torch {report['stage_to_torch_ratio']:.2f})", fontsize=9)
    left.tick_params(axis="x", labelsize=8)
    left.legend()
    lat = report["lookup"]["latencies_ms"]
    top = percentile(lat, 99.9) * 1.5
    right.hist([min(x, top) for x in lat], bins=60, color="C0")
    for q, style in ((50, "-"), (99, "--")):
        right.axvline(percentile(lat, q), color="k", ls=style, lw=0.8, label=f"p{q} {percentile(lat, q):.2f} ms")
    right.set_xlabel(f"lookup ms (search + decision, no embedding; max {max(lat):.0f} ms drawn at the right edge)")
    right.set_title(f"Lookup at {report['lookup']['entries']:,} entries in one tenant (Qdrant Edge)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=6000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["encode", "stage", "lookup"], default=None, help="run one part")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    settings = load_settings()
    services.up(settings, adopt=True)
    args.out.mkdir(parents=True, exist_ok=True)
    texts = [redact(r.text) for r in banking77_split()[1]]
    if args.only == "stage":  # a quick look while tuning; writes nothing
        print(json.dumps(stage_throughput(settings, args.tickets, args.out)))
        return 0
    encode = encode_throughput(settings, texts, args.repeat)
    stage = stage_throughput(settings, args.tickets, args.out)
    say(f"stage: {stage['tickets_per_s']:.0f} tickets/s, worker peak RSS {stage['worker_peak_rss_mb']:.0f} MB")
    lookup = lookup_latency(settings, args.entries, args.queries)
    say(f"lookup at {lookup['entries']} entries: p50 {lookup['p50_ms']:.2f} ms, p99 {lookup['p99_ms']:.2f} ms")
    report = {"encode_texts_per_s": encode, "stage": stage, "lookup": lookup,
              "stage_to_worker_encoder_ratio": stage["tickets_per_s"] / encode[WORKER_ENCODER],
              "stage_to_encode_ratio": stage["tickets_per_s"] / encode["onnx-int8"],
              "stage_to_torch_ratio": stage["tickets_per_s"] / encode["torch"]}
    plot(report, args.out / "cache_bench.png")
    report["lookup"] = {k: v for k, v in lookup.items() if k != "latencies_ms"}
    (args.out / "cache_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
