"""A worker process: runs processors (each its own consumer group) in threads until stopped.

The process takes a numbered slot (a lock file under ``STATE/worker-slots``) so that its
transactional ids, ``<group>.<instance>-<slot>``, are unique among live processes yet
reused by the process that replaces a crashed one: the replacement's
``init_transactions`` then aborts the crashed process's open transaction at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import IO

from prometheus_client import CollectorRegistry, start_http_server

from pipeline.errors import ServiceError
from pipeline.metrics import RuntimeMetrics
from pipeline.runtime.loop import TransactionalLoop
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


def make_serde(settings: Settings) -> AvroSerde:
    registry = ConfluentSchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
    return AvroSerde(SchemaCatalog.load(), registry)


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

    serde = make_serde(settings)
    failed: list[BaseException] = []

    def _run(loop: TransactionalLoop) -> None:
        try:
            loop.run()
        except BaseException as exc:
            log.exception("%s stopped on a fatal error", loop.binding.name)
            failed.append(exc)
            stop.set()

    threads = [
        threading.Thread(
            target=_run,
            args=(TransactionalLoop(b, settings, serde, instance_id, metrics, stop),),
            name=f"ticketflow-{b.name}",
        )
        for b in bindings(settings, processor_names)
    ]
    log.info("worker %s (pid %d) running %s", instance_id, os.getpid(), [t.name for t in threads])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The lock file stays: unlinking it could hand the same slot to two new processes.
    lock.close()
    return 1 if failed else 0
