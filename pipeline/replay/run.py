"""A replay: its manifest, its estimate, its submission, and what came of it.

A replay is named by its tag. Its manifest (Redis, ``replay:<tag>``) fixes what it replays:
the window as absolute times (so ``--since 2h`` means the same tickets when the command runs
again), the tenant, the path filter or the file, and the budget. Running the same tag again
resumes it: the same tickets are submitted again and intake drops the ones it already has
(idempotency per ticket and tag), so a command killed midway and run again replays each
ticket once. Answers come back on ``tickets.replay.responses`` with the tag.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from pipeline.adapters.redis_budget import RedisBudgets
from pipeline.client import TicketflowClient
from pipeline.events import Lane, TicketResolved, TicketSubmitted, UsageRecord
from pipeline.llm.pricing import PricingTable
from pipeline.replay import window as windows
from pipeline.replay.dry_run import PathPlan
from pipeline.replay.estimate import Estimate, duration_s, estimate, runs_from_usage
from pipeline.settings import Settings

HISTORY_DAYS = 30
#: An agent ticket the replay's budget stopped: its escalation reason starts with this.
OVER_BUDGET = "budget: scope_budget"


@dataclass
class Manifest:
    tag: str
    source: str  # "tickets.ingress" or the file's path
    since_ms: int | None = None
    until_ms: int | None = None
    tenant: str | None = None
    path: str | None = None  # only tickets whose original answer took this path
    lane: str = "batch"
    budget_micros: int | None = None
    created_at: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls(**json.loads(text))


class Manifests:
    def __init__(self, client: redis.Redis[bytes], key_prefix: str, ttl_s: int = 30 * 24 * 3600) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s

    def get(self, tag: str) -> Manifest | None:
        raw = self.client.get(f"{self.key_prefix}replay:{tag}")
        return Manifest.from_json(raw) if raw is not None else None

    def put(self, manifest: Manifest) -> None:
        self.client.set(f"{self.key_prefix}replay:{manifest.tag}", manifest.to_json(), ex=self.ttl_s)


@dataclass
class Selection:
    """The tickets of a replay, and the original answer of each (where there is one)."""

    window: windows.Window
    tickets: list[TicketSubmitted]
    originals: dict[str, TicketResolved] = field(default_factory=dict)
    #: the resolution key (else the path) of every answered ticket on tickets.responses: the
    #: groups the estimate pools runs by
    answer_keys: dict[str, str] = field(default_factory=dict)


def originals(client: TicketflowClient, ids: set[str] | None = None) -> dict[str, TicketResolved]:
    """The last customer-facing answer of each ticket on ``tickets.responses``."""
    answers: dict[str, TicketResolved] = {}
    for item in client.results(drain=True, ticket_ids=ids):
        answers[item.event.ticket_id] = item.event
    return answers


def select(client: TicketflowClient, manifest: Manifest,
           progress: Callable[[int], None] | None = None) -> Selection:
    if manifest.source == "tickets.ingress":
        assert manifest.since_ms is not None
        window = windows.select(client, manifest.since_ms, manifest.until_ms, manifest.tenant, progress)
    else:
        window = windows.from_file(Path(manifest.source), manifest.tenant)
    tickets = _unique(window.tickets)
    everything = originals(client)  # one read of tickets.responses serves the window and the estimate
    ids = {t.ticket_id for t in tickets}
    answers = {i: a for i, a in everything.items() if i in ids} if manifest.source == "tickets.ingress" else {}
    keys = {i: a.resolution_key or a.path for i, a in everything.items()}
    if manifest.path is not None:
        kept = [t for t in tickets if t.ticket_id in answers and answers[t.ticket_id].path == manifest.path]
        window.skipped["other_path"] = len(tickets) - len(kept)
        tickets = kept
    return Selection(window, tickets, answers, keys)


def _unique(tickets: Iterable[TicketSubmitted]) -> list[TicketSubmitted]:
    """One ticket per (tenant, id): a ticket produced twice was answered once."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for ticket in tickets:
        if (ticket.tenant_id, ticket.ticket_id) not in seen:
            seen.add((ticket.tenant_id, ticket.ticket_id))
            unique.append(ticket)
    return unique


def usage_history(client: TicketflowClient, days: int = HISTORY_DAYS) -> list[UsageRecord]:
    since = int(time.time() * 1000) - days * 86_400_000
    return [r for r in client.events("llm.usage", UsageRecord, timeout_s=60) if r.occurred_at >= since]


def price(settings: Settings, path_plan: PathPlan, history: list[UsageRecord],
          groups: dict[str, str] | None = None) -> Estimate:
    """The agent share of a replay priced from history with today's prices and batch models
    (``groups``: ticket id -> its original answer's resolution key, see :func:`estimate`)."""
    from pipeline.agent.factory import tiers

    pricing = PricingTable.load(settings.pricing_file)
    batch_models = settings.agent_batch_models or tiers(settings)

    def model_of(tier: str, recorded: str) -> str:
        return batch_models.get(tier, recorded)

    return estimate(path_plan.agent, runs_from_usage(history), pricing, model_of, group_of=groups)


def dry_run_report(settings: Settings, selection: Selection, path_plan: PathPlan, priced: Estimate,
                   submit_rate: float | None = None) -> dict[str, Any]:
    rate = settings.llm_rate_per_s * settings.llm_batch_rate_share
    agent = priced.agent_tickets
    # the runs' recorded wall times: the workers' real speed (a simulated provider's time scale included)
    seconds = duration_s(agent, len(selection.tickets) - agent, priced.mean_calls, priced.mean_run_s, rate,
                         settings.agent_batch_concurrency)
    if submit_rate is not None:  # the replay puts tickets back no faster than this
        seconds = max(seconds, len(selection.tickets) / submit_rate)
    return {
        "tickets": len(selection.tickets),
        "by_path": dict(sorted(path_plan.by_path.items())),
        **priced.as_json(),
        "estimated_duration_s": round(seconds, 1),
        "batch_lane": {"rate_per_s": rate, "concurrency": settings.agent_batch_concurrency},
        "submit_rate_per_s": submit_rate,
        "invalid": dict(list(path_plan.invalid.items())[:5]),
        "window": selection.window.describe(),
    }


def submit(client: TicketflowClient, tickets: Iterable[TicketSubmitted], tag: str, lane: Lane,
           on_sent: Callable[[TicketSubmitted], None] | None = None, rate_per_s: float | None = None) -> int:
    """The tickets again, tagged, on ``lane``, with their original time (their relative dates
    and any decision that depends on the day agree with the original run)."""
    return client.submit((dataclasses.replace(t, replay_tag=tag, lane=lane) for t in tickets), on_sent=on_sent,
                         rate_per_s=rate_per_s)


def answers(client: TicketflowClient, tag: str, ids: set[str], timeout_s: float | None,
            on_new: Callable[[TicketResolved], None] | None = None) -> list[TicketResolved]:
    """Every answer of the replay (duplicates included), read until each of ``ids`` has one
    or ``timeout_s`` (None: read what is there)."""
    found: list[TicketResolved] = []
    seen: set[str] = set()
    for event in client.replay_results(tag, timeout_s=timeout_s,
                                       done=lambda: ids <= seen if timeout_s is not None else False):
        if event.ticket_id not in ids:
            continue
        if event.ticket_id not in seen and on_new is not None:
            on_new(event)
        seen.add(event.ticket_id)
        found.append(event)
    return found


def outcome_report(selection: Selection, got: list[TicketResolved], spent_micros: int | None,
                   examples: int = 5) -> dict[str, Any]:
    """What the replay did: resolved, duplicates, paths, cost, what changed and what the
    budget stopped."""
    counts = Counter(a.ticket_id for a in got)
    first: dict[str, TicketResolved] = {}
    for answer in got:
        first.setdefault(answer.ticket_id, answer)
    by_path = Counter(a.path for a in first.values())
    stopped = [a.ticket_id for a in first.values() if (a.escalation_reason or "").startswith(OVER_BUDGET)]
    changed: list[dict[str, Any]] = []
    for ticket_id, answer in first.items():
        before = selection.originals.get(ticket_id)
        if before is not None and (before.path, before.resolution_key) != (answer.path, answer.resolution_key):
            changed.append({"ticket_id": ticket_id, "before": {"path": before.path, "key": before.resolution_key},
                            "after": {"path": answer.path, "key": answer.resolution_key}})
    missing = [t.ticket_id for t in selection.tickets if t.ticket_id not in first]
    report: dict[str, Any] = {
        "tickets": len(selection.tickets),
        "resolved": len(first),
        "duplicates": sum(n - 1 for n in counts.values()),
        "by_path": dict(sorted(by_path.items())),
        "cost_usd": round(sum(a.cost_micros for a in first.values()) / 1e6, 6),
        "changed": {"count": len(changed), "compared": sum(1 for i in first if i in selection.originals),
                    "key_changed": sum(1 for c in changed if c["before"]["key"] != c["after"]["key"]),
                    "examples": changed[:examples]},
        "not_replayed": {"count": len(stopped) + len(missing), "over_budget": len(stopped),
                         "unanswered": len(missing), "examples": (stopped + missing)[:examples]},
    }
    if spent_micros is not None:
        report["spent_usd"] = round(spent_micros / 1e6, 6)
    return report


def budgets(settings: Settings, client: redis.Redis[bytes]) -> RedisBudgets:
    return RedisBudgets(client, settings.redis_key_prefix())
