"""A worker process: runs processors (each its own consumer group) in threads until stopped.

The process takes a numbered slot (a lock file under ``STATE/worker-slots``) so that its
transactional ids, ``<group>.<instance>-<slot>``, are unique among live processes yet
reused by the process that replaces a crashed one: the replacement's
``init_transactions`` then aborts the crashed process's open transaction at once.
"""

from __future__ import annotations

import faulthandler
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import IO

from prometheus_client import CollectorRegistry, start_http_server

from pipeline.errors import ServiceError
from pipeline.metrics import RuntimeMetrics
from pipeline.runtime.context import WorkerContext, dependency_probes
from pipeline.runtime.engine import Engine
from pipeline.runtime.failures import DependencyHealth
from pipeline.runtime.topology import bindings
from pipeline.serde import AvroSerde, ConfluentSchemaRegistry, SchemaCatalog
from pipeline.settings import Settings

log = logging.getLogger(__name__)
MAX_SLOTS = 256


def acquire_slot(settings: Settings, name: str) -> tuple[int, IO[str]]:
    """The lowest free slot for ``name`` on this host; held until the process exits."""
    directory = settings.state_dir.resolve() / "worker-slots"
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        handle = (directory / f"{settings.topic_prefix}{name}-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return slot, handle
    raise ServiceError(f"all {MAX_SLOTS} worker slots under {directory} are taken")


STUCK_EXIT_CODE = 70  # EX_SOFTWARE: restart me


def _watchdog(loops: list[Engine], stuck_after_s: float, stop: threading.Event) -> None:
    """Exit the process when a batch is stuck in the Kafka client, so a supervisor restarts it.

    A thread blocked inside librdkafka cannot be interrupted; a restart can. The replacement
    takes this slot, and with it the transactional id, which fences the stuck transaction.
    """
    while not stop.wait(min(5.0, stuck_after_s / 4)):
        now = time.monotonic()
        for loop in loops:
            started = loop.batch_started
            if started is not None and now - started > stuck_after_s:
                log.critical("%s: batch stuck for %.0f s (limit %.0f s, TICKETFLOW_STUCK_BATCH_S); "
                             "exiting with %d for a restart", loop.binding.name, now - started,
                             stuck_after_s, STUCK_EXIT_CODE)
                faulthandler.dump_traceback(all_threads=True)
                logging.shutdown()
                os._exit(STUCK_EXIT_CODE)


def make_serde(settings: Settings) -> AvroSerde:
    registry = ConfluentSchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
    return AvroSerde(SchemaCatalog.load(), registry)


def limit_native_threads(threads: int) -> None:
    """BLAS (numpy's OpenBLAS) and OpenMP pools at ``threads`` each. The worker's matrix
    products are small (a few queries against some thousand examples): OpenBLAS's idle threads
    spin after each, which cost 7 ms of CPU for a 1 ms product on two threads (1.5 ms on one)."""
    import numpy  # noqa: F401  (loaded first, so that its BLAS is the one limited)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def run_worker(settings: Settings, processor_names: list[str] | None = None,
               stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); returns the process exit code."""
    name = settings.instance_name or socket.gethostname()
    slot, lock = acquire_slot(settings, name)
    instance_id = f"{name}-{slot}"
    stop = stop or threading.Event()
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(registry)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port + slot, addr="0.0.0.0", registry=registry)
    if threading.current_thread() is threading.main_thread():
        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current batch", signum)
            stop.set()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        # `kill -USR1 PID` prints every thread's stack to the log: where is a stuck worker?
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    limit_native_threads(settings.native_threads)
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    serde = make_serde(settings)
    failed: list[BaseException] = []
    health = DependencyHealth(dependency_probes(settings), metrics)
    context = WorkerContext(settings, instance_id, registry, health)
    loops = [Engine(b, settings, serde, instance_id, metrics, stop, health)
             for b in bindings(context, processor_names)]

    def _run(loop: Engine) -> None:
        try:
            loop.run()
        except BaseException as exc:
            log.exception("%s stopped on a fatal error", loop.binding.name)
            failed.append(exc)
            stop.set()

    threads = [threading.Thread(target=_run, args=(loop,), name=f"ticketflow-{loop.binding.name}")
               for loop in loops]
    threading.Thread(target=_watchdog, args=(loops, settings.stuck_batch_s, stop), daemon=True,
                     name="ticketflow-watchdog").start()
    log.info("worker %s (pid %d) running %s", instance_id, os.getpid(), [t.name for t in threads])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    context.close()
    # The lock file stays: unlinking it could hand the same slot to two new processes.
    lock.close()
    return 1 if failed else 0
