"""Warming the pipeline (not the cache) before a demo measures it.

The first run after the local broker starts is not the system's steady state: for the whole
of a 2,000-ticket run at 100 tickets/s the broker's JVM is still compiling its hot paths on
the same two cores as the worker, and every path answers about twice as slowly (rule p50
1.0-1.4 s against 0.4-0.7 s in the run after it, README "Issue 11"). A cache that learns from
the stream learns late then: in topic bursts, an intent's questions have passed the cache
before the first answers to them are written back, so the cold-cache measurement says more
about the JVM than about the cache. Like any benchmark of a JVM, ``demo --warm-pipeline
SECONDS`` therefore sends traffic of its own tenant (``demo-warmup``, questions from the
router's training part of banking77, never the run's input) for a while first; without it,
a steady stream (``--rate``) on a broker that has carried no demo since it started (a demo
that ran marks it) is pointed at it. The run's tenants' caches stay empty; nothing of the
warm-up is counted.
"""

from __future__ import annotations

import random
from pathlib import Path

from pipeline import services
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_split
from pipeline.events import TicketSubmitted
from pipeline.services.process import read_pid
from pipeline.settings import Settings

WARM_UP_TENANT = "demo-warmup"
#: Seconds of traffic that warmed a broker the demo started (the demo's hint suggests them).
#: A 2,000-ticket run at 100/s (about 25 s) did it here; 20 s brought 6 of 7 cold starts to a
#: warm run's latency (rule p50 255-783 ms, against 379-712 warm and 1,248-1,441 cold), one
#: stayed at 1,306 ms (README "Issue 11").
DEFAULT_SECONDS = 20.0
MARKER = "demo-warmed-broker"


def _marker(settings: Settings) -> Path:
    return settings.state_dir / MARKER


def local_broker_pid(settings: Settings) -> int | None:
    """The pid of the broker this state directory started (None: external or not ours)."""
    kafka, _ = services.services(settings)
    return None if kafka.external else read_pid(kafka.pid_file)


def broker_is_cold(settings: Settings) -> bool:
    """True when the local broker has not carried a demo since it started. A configured
    (external) broker is taken to be warm: it serves traffic other than ours."""
    pid = local_broker_pid(settings)
    if pid is None:
        return False
    try:
        return _marker(settings).read_text().strip() != str(pid)
    except OSError:
        return True


def mark_warm(settings: Settings) -> None:
    pid = local_broker_pid(settings)
    if pid is not None:
        _marker(settings).write_text(f"{pid}\n")


def warm_up_tickets(run_id: str, count: int, seed: int = 11) -> list[TicketSubmitted]:
    tune, _ = banking77_split()
    rng = random.Random(seed)
    picked = [tune[rng.randrange(len(tune))] for _ in range(count)]
    return [TicketSubmitted(ticket_id=f"demo-{run_id}-pipeline-warmup-{i}", tenant_id=WARM_UP_TENANT, body=q.text)
            for i, q in enumerate(picked)]


def warm_pipeline(client: TicketflowClient, run_id: str, seconds: float, rate: float,
                  timeout_s: float = 300.0) -> int:
    """``seconds`` of traffic at ``rate`` tickets/s on the warm-up tenant, every ticket waited
    for (none may still be in flight when the run starts); returns how many answered."""
    tickets = warm_up_tickets(run_id, max(1, round(seconds * rate)))
    ids = {t.ticket_id for t in tickets}
    client.submit(tickets, rate_per_s=rate)
    answered = {item.event.ticket_id for item in client.results(expect=len(ids), ticket_ids=ids, timeout_s=timeout_s)}
    return len(answered)
