"""`ticketflow demo`: the whole pipeline on sample tickets, with a report.

Starts local services when none are configured, applies the topics, runs worker
processes, submits tickets (banking77 sample, or ``--input CSV``), waits for every ticket to
be resolved or dead-lettered, stops the workers and reports counts, paths and latency.
"""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import demo_warmup, services
from pipeline.adapters.redis_audit import RedisAuditLedger
from pipeline.adapters.redis_billing import RedisBilling
from pipeline.adapters.redis_tool_cache import RedisToolCache
from pipeline.adapters.sql_bank import SqlBank
from pipeline.admin import apply_topics, wait_for_readers
from pipeline.cache.audit import audited_ticket
from pipeline.cache.audit_report import audit_summary
from pipeline.client import TicketflowClient
from pipeline.datasets import banking77_sample, banking77_split
from pipeline.errors import ServiceError
from pipeline.events import CacheUpdate, DeadLetter, TicketResolved, TicketSubmitted, UsageRecord
from pipeline.malformed import malformed_records
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from pipeline.tools.demo_bank import customer_id, seed_bank

DEMO_CUSTOMERS = 200


@dataclass
class DemoOptions:
    tickets: int = 1000
    input_csv: Path | None = None
    workers: int = 1
    malformed: int = 0
    rate: float | None = None  # tickets per second; None = as fast as possible
    timeout_s: float = 600.0
    seed: int = 7
    tenant: str = "demo"
    warm_csv: Path | None = None  # seed the cache with these labelled rows first
    fault_rate: float | None = None  # the simulated provider's share of failed calls
    split_background: bool = False  # the processors nobody waits on in a worker process of their own
    split_agent: bool = False  # the agent in a worker process of its own
    nice: int = 0  # the niceness of the processes split off (the customer's fast paths keep 0)
    # seconds of warm-up traffic on a tenant of its own before the run (pipeline.demo_warmup)
    warm_pipeline_s: float = 0.0


@dataclass
class DemoReport:
    submitted: int = 0
    resolved: int = 0
    lost: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    malformed_submitted: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    escalation_reasons: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_by_path_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    stage_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage, over its tickets
    naive_latency_ms: dict[str, float] = field(default_factory=dict)  # the naive loop's, from the latency model
    llm_calls: int = 0
    billed_calls: int = 0
    cost_usd: float = 0.0
    naive_cost_usd: float | None = None
    # labelled input: per path, the share of its answers whose resolution key is the label
    right_key_by_path: dict[str, float] = field(default_factory=dict)
    # the live audit of the cache's hits (pipeline/cache/audit.py): what production sees without labels
    cache_audit: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    topic_prefix: str = ""
    # what to run next: the replay of exactly this run's tickets (its window of tickets.ingress)
    replay_command: str = ""
    pipeline_warm_up_tickets: int = 0  # answered before the run, on the warm-up tenant (not counted)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    return {f"p{q}": percentile(values, q) for q in qs}


def stage_percentiles(per_ticket: Iterable[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage (``agent:0``, ``agent:1``, ... summed as ``agent``), the percentiles of the
    milliseconds it added to the tickets that went through it."""
    totals: dict[str, list[float]] = {}
    for stages in per_ticket:
        summed: dict[str, float] = {}
        for name, ms in stages.items():
            base = name.split(":")[0]
            summed[base] = summed.get(base, 0.0) + ms
        for name, ms in summed.items():
            totals.setdefault(name, []).append(ms)
    return {name: percentiles(values) for name, values in sorted(totals.items())}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # ceil, not round(x + 0.5): Python rounds halves to even, which took the next rank whenever
    # q/100 * n was a whole number (the p50 of two values was the larger one)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def load_input(options: DemoOptions, run_id: str) -> list[TicketSubmitted]:
    rows: list[dict[str, str]]
    if options.input_csv is not None:
        with options.input_csv.open(encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("text")]
        rows = rows[: options.tickets] if options.tickets else rows
    else:
        # The held-out part of the train split: the router's classifier learnt from the
        # other part, so the demo shows how it does on questions it has not seen.
        _, holdout = banking77_split()
        rows = [{"text": q.text, "label": q.label}
                for q in banking77_sample(options.tickets, options.seed, holdout)]
    rng = random.Random(options.seed)
    tickets = []
    for i, row in enumerate(rows):
        metadata = {"label": row["label"]} if row.get("label") else {}
        tickets.append(TicketSubmitted(
            ticket_id=row.get("ticket_id") or f"demo-{run_id}-{i}",
            tenant_id=row.get("tenant_id") or options.tenant,
            # Signed-in customers of the demo bank (its tools look them up), unless the CSV says.
            customer_id=row.get("customer_id") or customer_id(rng.randint(1, DEMO_CUSTOMERS)),
            body=row["text"],
            metadata=metadata,
        ))
    return tickets


def seed_tool_data(settings: Settings, tenants: list[str]) -> None:
    """The demo bank's customers, cards, transfers and top-ups for the demo's tenants."""
    bank = SqlBank(settings.tools_database())
    try:
        seed_bank(bank, tenants, customers=DEMO_CUSTOMERS)
    finally:
        bank.close()
    # What the tools cached about the previous demo's data is stale now.
    cache = RedisToolCache(redis_client(settings), settings.redis_key_prefix())
    for tenant in tenants:
        for source in ("cards", "transfers", "top_ups"):
            cache.invalidate(tenant, source)


#: what ``--split-background`` runs apart: the processors no customer waits on
BACKGROUND_PROCESSORS = ("cache-writer", "cache-audit", "accounting")
#: and what every other worker process then runs
CUSTOMER_PATH_PROCESSORS = ("intake", "cache", "router", "tools", "agent")


def worker_groups(count: int, split_background: bool = False,
                  split_agent: bool = False) -> list[tuple[tuple[str, ...], bool]]:
    """The processors of each worker process to start (() = every processor), and whether the
    process is split off the customer's fast paths (intake, cache, router, tools)."""
    if not (split_background or split_agent):
        return [((), False)] * count
    fast = tuple(p for p in CUSTOMER_PATH_PROCESSORS if not (split_agent and p == "agent"))
    rest = ("agent",) if split_agent else ()
    if not split_background:
        fast = (*fast, *BACKGROUND_PROCESSORS)
    groups = [(fast, False)] * count
    if split_agent:
        groups += [(rest, True)] * count
    if split_background:
        groups.append((BACKGROUND_PROCESSORS, True))
    return groups


def start_workers(settings: Settings, count: int, log_dir: Path, fault_rate: float | None = None,
                  split_background: bool = False, split_agent: bool = False,
                  nice: int = 0) -> list[subprocess.Popen[bytes]]:
    """``count`` workers; with a split, the fast paths in ``count`` processes and the split-off
    processors in processes of their own, started at niceness ``nice`` (their encoder children,
    if any, inherit it)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TICKETFLOW_TOPIC_PREFIX": settings.topic_prefix}
    if fault_rate is not None:
        env["TICKETFLOW_SIM_FAULT_RATE"] = str(fault_rate)
    procs = []
    for i, (names, split_off) in enumerate(worker_groups(count, split_background, split_agent)):
        log = (log_dir / f"demo-worker-{i}.log").open("ab")
        niced = ["nice", "-n", str(nice)] if split_off and nice else []  # the process and all it starts
        procs.append(subprocess.Popen(
            [*niced, sys.executable, "-m", "pipeline.cli.main", "--log-level", "INFO", "worker", *names],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        ))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_demo(settings: Settings, options: DemoOptions) -> DemoReport:
    started = time.monotonic()
    say("demo: starting services (local Kafka and Redis unless configured)...")
    services.up(settings, adopt=True)
    apply_topics(settings)
    run_id = uuid.uuid4().hex[:8]
    tickets = load_input(options, run_id)
    say(f"demo: seeding the demo bank's data ({settings.tools_database().split(':')[0]})...")
    seed_tool_data(settings, sorted({t.tenant_id for t in tickets}))
    ids = {t.ticket_id for t in tickets}
    client = TicketflowClient(settings)
    arrivals: dict[str, list[int]] = {}
    created: dict[str, int] = {}
    costs: dict[str, int] = {}
    stages: dict[str, dict[str, float]] = {}  # each ticket's milliseconds per stage
    keys: dict[str, str] = {}  # the intent each ticket was resolved with (the naive loop's understanding)
    paths: Counter[str] = Counter()
    path_of: dict[str, str] = {}
    reasons: Counter[str] = Counter()

    procs = start_workers(settings, options.workers, settings.state_dir / "logs", options.fault_rate,
                          options.split_background, options.split_agent, options.nice)
    billing = RedisBilling(redis_client(settings), settings.redis_key_prefix())
    try:
        say(f"demo: {options.workers} worker process(es) started; waiting for them to join...")
        warm_up(client, run_id)
        warmed = pipeline_warm_up(settings, client, run_id, options)
        prepare_cache(client, settings, sorted({t.tenant_id for t in tickets}), options.warm_csv, run_id)
        ledger = RedisAuditLedger(redis_client(settings), settings.redis_key_prefix())
        for tenant in sorted({t.tenant_id for t in tickets}):  # a demo's audit starts afresh, like its cache
            ledger.reset(tenant, counts=True, reason="demo start")
        billing.reset()  # the provider's count from here on: this run's tickets only
        say(f"demo: submitting {len(tickets)} tickets")
        bar = tqdm(total=len(tickets), desc="resolved", unit="ticket", file=sys.stderr)

        def collect() -> None:
            for item in client.results(expect=len(ids), ticket_ids=ids, timeout_s=options.timeout_s):
                resolved: TicketResolved = item.event
                first = resolved.ticket_id not in arrivals
                arrivals.setdefault(resolved.ticket_id, []).append(item.received_at)
                if first:
                    created[resolved.ticket_id] = resolved.created_at
                    costs[resolved.ticket_id] = resolved.cost_micros
                    stages[resolved.ticket_id] = resolved.stage_latency_ms
                    if resolved.resolution_key:
                        keys[resolved.ticket_id] = resolved.resolution_key
                    paths[resolved.path] += 1
                    path_of[resolved.ticket_id] = resolved.path
                    if resolved.escalation_reason:
                        reasons[resolved.escalation_reason] += 1
                    bar.update()

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        window_start = time.time()
        _submit(client, tickets, options.rate)
        window_end = time.time() + 1.0  # the broker's timestamps of the last records, and a margin
        bad = list(malformed_records(options.malformed, client.serde, run_id, int(time.time() * 1000)))
        for record in bad:
            client.send_raw(client.topic("tickets.ingress"), record.key, record.value)
        client.flush()
        reader.join()
        bar.close()
        # Read the egress again to its end: a duplicate could follow the last first arrival.
        counts = Counter(r.event.ticket_id for r in client.results(ticket_ids=ids, timeout_s=None,
                                                                   expect=None, drain=True))
        bad_keys = {r.key.decode() for r in bad} | ids
        letters = [r.event for r in client.dead_letters(timeout_s=30)
                   if isinstance(r.event, DeadLetter) and r.event.key
                   and r.event.key.decode(errors="replace") in bad_keys]
        demo_warmup.mark_warm(settings)  # the broker has carried a demo: the next run finds it warm
        say("demo: waiting for the cache audit's answers (batch lane)...")
        audit = audit_summary(client, ids, paths.get("cache", 0))
    finally:
        stop_workers(procs)

    latencies = [float(arrivals[i][0] - created[i]) for i in arrivals]
    naive_cost, naive_times = naive_run(settings, tickets, keys)
    # the audit's calls are this run's calls too (billed by the provider, accounted as workflow
    # cache-audit). The warm-up ticket's are not: from a second run on it is a cache hit of the
    # first run's answer and the audit may sample it, billed after the count was reset; so both
    # sides count the run's own tickets (the provider's books name each call's request id)
    usage = [u for u in client.events("llm.usage", UsageRecord, timeout_s=30)
             if u.ticket_id is not None and audited_ticket(u.ticket_id) in ids]
    billed = sum(times for request_id, times in billing.calls().items()
                 if audited_ticket(request_id.rsplit(":", 3)[0]) in ids)
    served = {u.record_id for u in usage if u.kind == "llm" and u.outcome == "ok"}
    lettered_ids = {d.key.decode(errors="replace") for d in letters if d.key}
    report = DemoReport(
        pipeline_warm_up_tickets=warmed,
        submitted=len(tickets),
        resolved=len(counts),
        duplicates=sum(c - 1 for c in counts.values()),
        dead_letters=len(letters),
        malformed_submitted=len(bad),
        lost=len(ids - set(counts) - lettered_ids),
        by_path=dict(paths),
        escalation_reasons=dict(reasons),
        latency_ms=percentiles(latencies),
        latency_by_path_ms={path: percentiles([float(arrivals[i][0] - created[i]) for i in arrivals
                                               if path_of.get(i) == path])
                            for path in sorted(set(path_of.values()))},
        stage_latency_ms=stage_percentiles(stages.values()),
        naive_latency_ms=percentiles(naive_times, (50, 95)),
        llm_calls=len(served),
        billed_calls=billed,
        cost_usd=round(sum(costs.values()) / 1_000_000, 6),
        naive_cost_usd=round(naive_cost / 1_000_000, 6),
        right_key_by_path=right_keys(tickets, keys, path_of),
        cache_audit=audit,
        wall_s=round(time.monotonic() - started, 1),
        topic_prefix=settings.topic_prefix,
        replay_command=replay_command(window_start, window_end, sorted({t.tenant_id for t in tickets})),
    )
    return report


def replay_command(start: float, end: float, tenants: list[str]) -> str:
    """``ticketflow replay`` of the window a run produced (a dry run first: it prices it)."""
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    tenant = f" --tenant {tenants[0]}" if len(tenants) == 1 else ""
    return f"ticketflow replay --since {iso(start)} --until {iso(end)}{tenant} --dry-run"


def right_keys(tickets: list[TicketSubmitted], keys: dict[str, str], path_of: dict[str, str]) -> dict[str, float]:
    """Per path, the share of labelled tickets answered there with their label as resolution key."""
    right: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    for ticket in tickets:
        label, path = ticket.metadata.get("label"), path_of.get(ticket.ticket_id)
        if label and path and path != "escalated":
            answered[path] += 1
            right[path] += keys.get(ticket.ticket_id) == label
    return {path: round(right[path] / n, 4) for path, n in sorted(answered.items())}


def prepare_cache(client: TicketflowClient, settings: Settings, tenants: list[str], warm_csv: Path | None,
                  run_id: str, timeout_s: float = 300.0) -> None:
    """Empty the tenants' caches (the demo shows the cache filling up), then seed them from
    ``warm_csv``; return once every running cache replica has applied all of it."""
    now = int(time.time() * 1000)
    updates = [CacheUpdate(tenant_id=t, op="purge", created_at=now) for t in tenants]
    if warm_csv is not None:
        from pipeline.cache.seeding import seed_updates

        for tenant in tenants:
            updates += seed_updates(warm_csv, tenant, "1", now + 1, settings.cache_ttl_s * 1000)
        say(f"demo: {len(updates) - len(tenants)} cache entries sent for {', '.join(tenants)}; "
            "waiting for the cache to load them...")
    written, _ = client.cache_updates_at(updates)
    replicas = wait_for_readers(settings, "cache.updates", written, "ticketflow.cache-index", timeout_s)
    say(f"demo: {replicas} cache replica(s) emptied{' and seeded' if warm_csv else ''}")


def naive_run(settings: Settings, tickets: list[TicketSubmitted],
              intents_by_ticket: dict[str, str]) -> tuple[int, list[float]]:
    """The same tickets through the naive agent loop (see :mod:`pipeline.agent.naive`): what
    it costs in all (micro-dollars) and how long each ticket takes (ms)."""
    from pipeline.agent.naive import NaiveLoop
    from pipeline.llm.pricing import PricingTable
    from pipeline.llm.simulated import SimulatedProvider
    from pipeline.routing.factory import build_rulebook
    from pipeline.tools.banking import tool_specs

    tools = tool_specs()
    intents = sorted(build_rulebook(settings, tools).intents())
    # The naive loop gets the prompt cache's discount on its static prefix whatever its length
    # (a provider caches from 1,024 tokens): the comparison never gains from it missing the cache.
    loop = NaiveLoop(SimulatedProvider(seed=settings.sim_seed, intents=intents, cache_min_tokens=0),
                     PricingTable.load(settings.pricing_file), tools, intents, settings.llm_strong_model)
    runs = [loop.run(t, intents_by_ticket.get(t.ticket_id)) for t in tickets]
    return sum(cost for cost, _ in runs), [elapsed for _, elapsed in runs]


def pipeline_warm_up(settings: Settings, client: TicketflowClient, run_id: str, options: DemoOptions) -> int:
    """``--warm-pipeline`` seconds of traffic on a tenant of its own (pipeline.demo_warmup).
    Not the default: a steady stream on a broker that has carried no demo since it started is
    only pointed at it."""
    cold = demo_warmup.broker_is_cold(settings)
    seconds = options.warm_pipeline_s
    if seconds <= 0:
        if cold and options.rate:
            say("demo: the broker has carried no demo since it started: its JVM answers every path about "
                f"twice as slowly for the first thousands of tickets; --warm-pipeline "
                f"{demo_warmup.DEFAULT_SECONDS:.0f} warms it first")
        return 0
    rate = min(options.rate or 100.0, 100.0)
    why = "the broker has carried no demo since it started; " if cold else ""
    say(f"demo: warming the pipeline for {seconds:.0f} s ({why}tenant {demo_warmup.WARM_UP_TENANT}, "
        "not counted)...")
    return demo_warmup.warm_pipeline(client, run_id, seconds, rate, timeout_s=options.timeout_s)


def warm_up_id(run_id: str) -> str:
    return f"demo-{run_id}-warmup"


def warm_up(client: TicketflowClient, run_id: str, timeout_s: float = 120.0) -> None:
    """One ticket through every stage first, so that group joins stay out of the latency."""
    ticket_id = warm_up_id(run_id)
    client.submit([TicketSubmitted(ticket_id=ticket_id, tenant_id="demo-warmup", body="warm-up")])
    for _ in client.results(expect=1, ticket_ids={ticket_id}, timeout_s=timeout_s):
        return
    raise ServiceError(f"the workers did not answer a warm-up ticket within {timeout_s:.0f} s; "
                       "see the worker logs under the state directory's logs/")


def _submit(client: TicketflowClient, tickets: list[TicketSubmitted], rate: float | None) -> None:
    client.submit(tickets, rate_per_s=rate)
