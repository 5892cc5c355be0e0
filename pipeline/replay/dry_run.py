"""The dry run: which path each ticket of a replay would take today, with nothing spent.

Intake's checks, the cache lookup and the router run for real, in this process, over the
window's tickets: the processors the workers run, built by the same composition root, with
the read-only ports a dry run needs:

- intake checks and normalises, but claims no ticket id (a dry run must not make the replay
  look like a duplicate of itself);
- the cache looks up a private replica of the tenant partitions, rebuilt from
  ``cache.updates`` (as a new worker's replica is; with a Qdrant server, the shared
  collection is read) and thrown away after; no audit is sampled;
- the router decides; its tool calls and agent steps are counted, never produced.

Nothing is produced to Kafka, no LLM is called, no tool runs.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.client import TicketflowClient
from pipeline.events import AgentStep, CacheUpdate, TicketResolved, TicketSubmitted
from pipeline.processing import Emit, Failure, Outcome, Output, SystemClock
from pipeline.replay.estimate import AgentTicket
from pipeline.runtime.context import WorkerContext
from pipeline.topic_reader import TopicReader
from processors.intake import Intake, IntakeLimits

BATCH = 64


class _NoClaims:
    """Intake's idempotency port, read only: every id is new."""

    def claim_many(self, items: Sequence[tuple[str, str]]) -> list[bool]:
        return [True] * len(items)

    def claim(self, key: str, origin: str) -> bool:
        return True


@dataclass
class PathPlan:
    by_path: Counter[str] = field(default_factory=Counter)
    path_of: dict[str, str] = field(default_factory=dict)  # ticket id -> path
    agent: list[AgentTicket] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)  # ticket id -> why intake refuses it


def plan(client: TicketflowClient, tickets: Sequence[TicketSubmitted], tag: str,
         progress: Callable[[int], None] | None = None) -> PathPlan:
    """The path of every ticket, as today's intake, cache and router decide it."""
    from pipeline.runtime.topology import dry_run_processors

    settings = client.settings
    instance = f"replay-dry-{uuid.uuid4().hex[:8]}"
    ctx = WorkerContext(settings, instance)
    result = PathPlan()
    try:
        lookup, router, ticket_cap = dry_run_processors(ctx)
        if not settings.qdrant_url:
            _rebuild_replica(client, lookup.cache.apply)
        intake = Intake(_NoClaims(), SystemClock(), IntakeLimits(settings.max_body_bytes, settings.max_subject_bytes))
        for start in range(0, len(tickets), BATCH):
            chunk = [(_tagged(t, tag), f"dry-run/{start + i}") for i, t in enumerate(tickets[start:start + BATCH])]
            accepted: list[tuple[TicketSubmitted, str]] = []
            for (ticket, origin), outcome in zip(chunk, intake.handle_batch(chunk), strict=True):
                if isinstance(outcome, Failure):
                    result.invalid[ticket.ticket_id] = outcome.message
                    result.by_path["invalid"] += 1
                else:
                    accepted.append((_ticket(outcome), origin))
            missed: list[tuple[TicketSubmitted, str]] = []
            for (ticket, origin), outcome in zip(accepted, lookup.handle_batch(accepted), strict=True):
                first = _only(outcome)
                if first.topic == "tickets.responses":
                    _count(result, ticket.ticket_id, "cache")
                else:
                    missed.append((_ticket(outcome), origin))
            for (ticket, _), outcome in zip(missed, router.handle_batch(missed), strict=True):
                first = _only(outcome)
                if first.topic == "tickets.responses":
                    resolved = first.event
                    assert isinstance(resolved, TicketResolved)
                    _count(result, ticket.ticket_id, resolved.path)
                elif first.topic == "tools.calls":
                    _count(result, ticket.ticket_id, "tool")
                else:
                    step = first.event
                    assert isinstance(step, AgentStep)
                    _count(result, ticket.ticket_id, "agent")
                    result.agent.append(AgentTicket(ticket.ticket_id, step.workflow, ticket_cap(step.budget_profile)))
            if progress is not None:
                progress(len(chunk))
    finally:
        ctx.close()
        shutil.rmtree(settings.state_dir.resolve() / "cache" / f"{settings.topic_prefix}{instance}",
                      ignore_errors=True)
    return result


def _tagged(ticket: TicketSubmitted, tag: str) -> TicketSubmitted:
    import dataclasses

    return dataclasses.replace(ticket, replay_tag=tag, lane="batch")


def _only(outcome: Outcome) -> Output:
    assert isinstance(outcome, Emit) and outcome.outputs, outcome
    return outcome.outputs[0]


def _ticket(outcome: Outcome) -> TicketSubmitted:
    event = _only(outcome).event
    assert isinstance(event, TicketSubmitted)
    return event


def _count(result: PathPlan, ticket_id: str, path: str) -> None:
    result.by_path[path] += 1
    result.path_of[ticket_id] = path


def _rebuild_replica(client: TicketflowClient, apply: Callable[[Sequence[CacheUpdate]], None]) -> None:
    """Every update on ``cache.updates`` applied to the private replica, in order."""
    from processors.cache_follower import problem

    with TopicReader(client.settings.kafka_common(), client.topic("cache.updates")) as reader:
        while not reader.at_end:
            batch = []
            for message in reader.poll(timeout_s=0.2):
                try:
                    update = CacheUpdate.from_record(client.serde.decode(CacheUpdate.SCHEMA, message.value() or b""))
                except Exception:  # a record the followers dead-lettered
                    continue
                if problem(update) is None:
                    batch.append(update)
            if batch:
                apply(batch)
