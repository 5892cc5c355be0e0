"""The HTTP gateway's own cost: requests at a steady rate through `ticketflow serve` to one
`ticketflow worker`, each waiting for its answer (``POST /v1/tickets?wait=60``).

For every answered request: the client's end-to-end time (request sent to answer read), and
the pipeline's share from the ``Server-Timing: pipeline;dur=`` header (the gateway's produce
call to the answer read back from Kafka: what a Kafka client of its own would wait). The
gateway's overhead is the difference: HTTP, the API key, the tenant's rate limit, the
idempotency key and the pending mark in Redis, and waking the request. Reported per rate:
percentiles of the overhead, of the pipeline's share and of the end-to-end time, and the
status codes.

    ./run ticketflow services up
    PYTHONPATH=. .venv/bin/python bench/gateway_bench.py --rates 50 200 --seconds 20

Writes ``bench/results/gateway_bench.json`` and ``gateway_bench.png`` (with ``--pipeline echo``,
``gateway_bench_echo.*``: the runtime answers every ticket at once, so that the gateway is
measured at a rate the real pipeline cannot answer on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p = np.percentile(values, [50, 95, 99])
    return {"n": len(values), "p50": round(float(p[0]), 2), "p95": round(float(p[1]), 2),
            "p99": round(float(p[2]), 2), "max": round(max(values), 2)}


async def load(url: str, key: str, rate: float, seconds: float, texts: list[str]) -> dict[str, Any]:
    """Open-loop load: one request every 1/rate seconds, whatever the answers do. aiohttp as the
    client: httpx's connection pool slowed down with a thousand requests waiting at once, and
    its queueing showed up as the gateway's overhead in a first run."""
    import aiohttp

    results: list[tuple[int, float, float | None, float | None]] = []
    steps: list[tuple[float, float]] = []  # the handler's time before the produce call, and its wake-up
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=90)) as session:
        async def one(i: int) -> None:
            started = time.perf_counter()
            try:
                async with session.post("/v1/tickets", params={"wait": "60"}, json={"body": texts[i % len(texts)]},
                                        headers={"Authorization": f"Bearer {key}"}) as r:
                    await r.read()
                    status, timing_header = r.status, r.headers.get("server-timing", "")
            except (aiohttp.ClientError, TimeoutError):
                results.append((0, 0.0, None, None))
                return
            e2e = (time.perf_counter() - started) * 1000
            timing = re.search(r"pipeline;dur=([0-9.]+)", timing_header)
            handler = re.search(r"handler;dur=([0-9.]+)", timing_header)
            results.append((status, e2e, float(timing.group(1)) if timing else None,
                            float(handler.group(1)) if handler else None))
            parts = dict(re.findall(r"(admit|wake);dur=([0-9.]+)", timing_header))
            if status == 200 and len(parts) == 2:
                steps.append((float(parts["admit"]), float(parts["wake"])))

        lags: list[float] = []
        running = True

        async def probe() -> None:
            """The load generator's own event-loop lag (a 1 ms sleep's overshoot): a request's
            end-to-end time includes it, though it is not the gateway's."""
            while running:
                asked = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - asked) * 1000 - 1)

        prober = asyncio.create_task(probe())
        tasks = []
        begin = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            if i and i % int(rate * 5) == 0:
                say(f"gateway-bench: {rate:g}/s: sent {i}/{n}")
        await asyncio.gather(*tasks)
        running = False
        await prober
    answered = [(e2e, pipe) for code, e2e, pipe, _ in results if code == 200 and pipe is not None]
    handled = [handler - pipe for code, _, pipe, handler in results
               if code == 200 and pipe is not None and handler is not None]
    return {"rate_per_s": rate, "sent": len(results), "codes": dict(Counter(str(c) for c, *_ in results)),
            "overhead_ms": pct([e2e - pipe for e2e, pipe in answered]),
            # the part of the overhead inside the endpoint (keys, Redis, encoding, waking it)
            "handler_overhead_ms": pct(handled),
            "admit_ms": pct([a for a, _ in steps]), "wake_ms": pct([w for _, w in steps]),
            "pipeline_ms": pct([pipe for _, pipe in answered]), "end_to_end_ms": pct([e2e for e2e, _ in answered]),
            "client_loop_lag_ms": pct(lags),
            "overheads": sorted(round(e2e - pipe, 2) for e2e, pipe in answered)}


def serve_echo(prefix: str) -> int:
    """A pipeline that answers at once: ticketflow's runtime (the same engine, exactly-once
    transactions every 25 ms, as the last hop of the real pipeline) turning each ticket on
    ``tickets.ingress`` into a resolution on ``tickets.responses``, until SIGTERM. With it the
    gateway's overhead is measured at a rate the real pipeline cannot answer on this machine."""
    from bench.serve_binding import serve
    from pipeline.events import TicketResolved, TicketSubmitted
    from pipeline.processing import Emit, Output
    from pipeline.runtime.binding import Batch, Binding

    def echo(batch: Batch) -> list[Emit]:
        now = int(time.time() * 1000)
        return [Emit((Output("tickets.responses", t.ticket_id, TicketResolved(
            ticket_id=t.ticket_id, tenant_id=t.tenant_id, customer_id=t.customer_id, answer="echo", path="rule",
            resolution_key="echo", created_at=t.created_at or now, resolved_at=now)),)) for t, _ in batch]

    return serve(Binding("bench-echo", ("tickets.ingress",), "TicketSubmitted", TicketSubmitted.from_record,
                         handle_batch=echo), prefix)


def start_echo(prefix: str, log: Path) -> subprocess.Popen[bytes]:
    """``serve_echo`` in a process of its own (in place of the workers ``start_workers`` starts)."""
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, __file__, "--serve-echo", prefix], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def gateway_children(pid: int) -> list[int]:
    """The processes of `serve --workers N` under its supervisor (none with one worker)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def pin(pid: int, cpus: str) -> None:
    """Every thread of ``pid`` and of its descendants onto ``cpus`` (taskset's list syntax)."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        pin(int(child), cpus)


def renice(pid: int, niceness: int) -> None:
    """Every thread of ``pid`` and of its descendants at ``niceness``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        renice(int(child), niceness)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--gateway-workers", type=int, default=1, help="`serve --workers N` (default 1)")
    parser.add_argument("--split-cpus", action="store_true",
                        help="the gateway and the load generator on CPU 1, the worker on CPU 0 (the broker and "
                             "Redis anywhere): the gateway with a core of its own, as a deployment of its own has")
    parser.add_argument("--yield-pipeline", type=int, default=0, metavar="NICE",
                        help="run the worker and the broker at this niceness (e.g. 10), so that the gateway and "
                             "the load generator get a core when they need one: the gateway's own overhead "
                             "without the CPU contention of sharing two cores with the pipeline")
    parser.add_argument("--pipeline", choices=["worker", "echo"], default="worker",
                        help="worker: a real `ticketflow worker` answers (default); echo: the runtime answers "
                             "every ticket at once (serve_echo), to measure the gateway where the pipeline keeps up")
    parser.add_argument("--serve-echo", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        return serve_echo(args.serve_echo)

    from bench.procstat import cpu_seconds
    from pipeline import services
    from pipeline.admin import apply_topics, delete_topics
    from pipeline.datasets import banking77_split
    from pipeline.demo import start_workers, stop_workers
    from pipeline.gateway.keys import ApiKeys
    from pipeline.runtime.context import redis_client
    from pipeline.settings import load_settings

    try:  # the load generator's own event loop is part of what it measures: the fast one
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    base = load_settings()
    services.up(base, adopt=True)
    settings = base.model_copy(update={"topic_prefix": f"gwbench-{uuid.uuid4().hex[:6]}."})
    apply_topics(settings)
    key, _ = ApiKeys(redis_client(settings), settings.redis_key_prefix()).create("bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": settings.topic_prefix, "TICKETFLOW_GATEWAY_RATE_PER_S": "10000",
           "TICKETFLOW_GATEWAY_RATE_BURST": "10000"}
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workers = ([start_echo(settings.topic_prefix, logs / "gateway_bench_echo.log")]
               if args.pipeline == "echo" else start_workers(settings, 1, logs))
    with (logs / "gateway_bench.log").open("ab") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "serve", "--port", str(port),
                                    "--workers", str(args.gateway_workers)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"seconds": args.seconds, "gateway_workers": args.gateway_workers,
                              "pipeline": args.pipeline, "runs": []}
    broker: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        _, held = banking77_split()
        texts = [q.text for q in held]
        asyncio.run(load(url, key, 5, 4, texts))  # warm-up: group joins, the model, the cache
        if args.split_cpus:
            for worker in workers:
                pin(worker.pid, "0")
            pin(gateway.pid, "1")
            pin(os.getpid(), "1")
            report["split_cpus"] = {"gateway and load generator": "1", "worker": "0", "broker and Redis": "any"}
        if args.yield_pipeline:
            broker = [int(b) for b in subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True,
                                                     text=True).stdout.split()]
            for pid in [w.pid for w in workers] + broker:
                renice(pid, args.yield_pipeline)
            report["yield_pipeline"] = {"worker and broker niceness": args.yield_pipeline}
        for rate in args.rates:
            processes = [gateway.pid, *gateway_children(gateway.pid)]
            cpu_before = sum(cpu_seconds(pid) for pid in processes)
            run = asyncio.run(load(url, key, rate, args.seconds, texts))
            # the gateway's CPU (every thread of every process: HTTP, the fan-out, the producer) per request
            run["gateway_cpu_ms_per_request"] = round((sum(cpu_seconds(pid) for pid in processes) - cpu_before)
                                                      * 1000 / max(1, run["sent"]), 3)
            say(f"gateway-bench: {rate:g}/s: overhead {run['overhead_ms']}, codes {run['codes']}")
            report["runs"].append(run)
    finally:
        for pid in broker:  # the broker is a service: it outlives the bench at its own priority
            renice(pid, 0)
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        stop_workers(workers)
        delete_topics(settings)
    report["command"] = ("PYTHONPATH=. .venv/bin/python bench/gateway_bench.py --rates "
                         + " ".join(f"{r:g}" for r in args.rates) + f" --seconds {args.seconds:g}"
                         + (f" --gateway-workers {args.gateway_workers}" if args.gateway_workers > 1 else "")
                         + (" --split-cpus" if args.split_cpus else "")
                         + (f" --yield-pipeline {args.yield_pipeline}" if args.yield_pipeline else "")
                         + (f" --pipeline {args.pipeline}" if args.pipeline != "worker" else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gateway_bench" if args.pipeline == "worker" else f"gateway_bench_{args.pipeline}"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / f"{name}.png")
    print(json.dumps([{k: v for k, v in r.items() if k != "overheads"} for r in report["runs"]], indent=2))
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in report["runs"]:
        values = run["overheads"]
        if values:
            ax.plot(values, np.linspace(0, 1, len(values)), label=f"{run['rate_per_s']:g} requests/s")
    ax.axvline(10, color="red", linestyle="--", label="target p99: 10 ms")
    ax.set_xscale("log")
    ax.set_xlabel("gateway overhead per answered request, ms (end to end minus the pipeline's share)")
    ax.set_ylabel("share of requests")
    ax.set_title("HTTP gateway overhead, POST /v1/tickets?wait=60")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
