"""What a replay will cost, before it spends: the agent share priced from usage history.

The dry run (:mod:`pipeline.replay.dry_run`) tells which tickets of the window would reach
the agent today, and on which route. Each agent run in ``llm.usage`` (its calls, grouped by
the run's step ids) is a sample of what a run of its route, and of its ticket, costs: its
tokens per call and tier, priced again with today's pricing table and the batch lane's
models (so a new price or a cheaper batch model shows). The estimate sums each agent
ticket's expectation (its own past runs, else its route's mean); the 95th percentile comes
from a bootstrap of the sum (2,000 draws); the hard upper bound is each agent ticket at its
per-ticket cap (its budget profile, at most the agent's cost limit). A route with fewer
than ``MIN_RUNS`` past runs borrows every route's runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from pipeline.cache.audit import AUDIT_WORKFLOW
from pipeline.events import UsageRecord
from pipeline.llm.pricing import PricingTable

MIN_RUNS = 5
DRAWS = 2000
BATCH_API_DISCOUNT = 0.5  # OpenAI's Batch API: half the price of the same call


@dataclass
class Call:
    tier: str
    model: str
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    latency_ms: float
    step: str = ""  # the agent step it served (a step's calls climb the cascade)
    workflow: str = ""  # the route it was accounted to


@dataclass
class Run:
    """One agent run of a ticket (the original or one replay of it), from its usage records."""

    run_id: str
    workflow: str
    calls: list[Call] = field(default_factory=list)
    steps: set[str] = field(default_factory=set)
    started_ms: float = float("inf")  # the first call's start
    ended_ms: float = 0.0  # the last call's end

    @property
    def wall_s(self) -> float:
        """From the first call's start to the last call's end: the calls, and the tool round
        trips and queueing between the steps."""
        return max(0.0, self.ended_ms - self.started_ms) / 1000 if self.calls else 0.0


def runs_from_usage(records: Sequence[UsageRecord], since_ms: int | None = None) -> list[Run]:
    """The agent runs in ``llm.usage`` (served calls only; the cache audit's are not tickets'),
    each record counted once however often it was delivered."""
    seen: set[str] = set()
    runs: dict[str, Run] = {}
    first_step: dict[str, int] = {}
    for record in records:
        if (record.kind != "llm" or record.outcome != "ok" or record.workflow == AUDIT_WORKFLOW
                or record.record_id in seen or (since_ms is not None and record.occurred_at < since_ms)):
            continue
        seen.add(record.record_id)
        run_key, _, number = record.step.rpartition(":")
        tier = record.record_id.rsplit(":", 1)[-1]
        run = runs.setdefault(run_key, Run(run_key, record.workflow))
        step_no = int(number) if number.isdigit() else 0
        if step_no < first_step.get(run_key, 1 << 30):  # the route the router chose: step 0's
            first_step[run_key] = step_no
            run.workflow = record.workflow
        run.steps.add(record.step)
        run.started_ms = min(run.started_ms, record.occurred_at - record.latency_ms)
        run.ended_ms = max(run.ended_ms, float(record.occurred_at))
        run.calls.append(Call(tier, record.model, record.tokens_in, record.tokens_out, record.tokens_cached,
                              record.latency_ms, record.step, record.workflow))
    return list(runs.values())


LADDER = ("cheap", "mid", "strong")  # the cascade's tiers, cheapest first (agent.factory.tiers)
AVERAGED_WEIGHT = 10  # an averaged run's expectation counts as this many runs in the band


class Cascade:
    """How often a call at each tier was followed by one a tier up in the same step, and what
    a call at each tier costs, from history: the cascade's escalation as a rate instead of
    the coin a past run happened to flip.

    A run's cost is mostly its structure (its route's steps, its prompts' tokens: the same
    when the ticket is replayed) and partly its cascade's draws (whether a cheap answer was
    confident enough, or the strong model at tens of times the cheap one's price). A ticket's past
    run is a good estimate of the first and one draw of the second; :meth:`expected` keeps
    the run's structure and tokens and replaces each step's climb by its expectation.

    Rates are kept per (route, step number, tier), the finest detail history has: a route's
    steps differ (a classifying step, a lookup, an answer after a tool result) and pooling
    them across routes was 15-20 % low on the very history it was fitted on, because the
    routes a replay sends to the agent are not the pooled mix (the lookups stay, the easy
    answers are deflected). A (route, step) history has not seen falls back to its step
    number, then to the tier."""

    def __init__(self, runs: Sequence[Run], cost: Callable[[Call], int], ladder: Sequence[str] = LADDER) -> None:
        self.ladder = [t for t in ladder if any(c.tier == t for r in runs for c in r.calls)] or list(ladder)
        self.cost = cost
        self._up: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])  # key -> [escalated, calls]
        self._models: dict[str, str] = {}  # tier -> the model history used for it
        for run in runs:
            for calls in self.steps(run):
                for i, call in enumerate(calls):
                    climbed = i + 1 < len(calls) and self._rank(calls[i + 1].tier) > self._rank(call.tier)
                    for key in self._keys(call):
                        self._up[key][0] += climbed
                        self._up[key][1] += 1
                    self._models[call.tier] = call.model

    def _rank(self, tier: str) -> int:
        return self.ladder.index(tier) if tier in self.ladder else len(self.ladder)

    @staticmethod
    def _keys(call: Call) -> tuple[tuple[str, ...], ...]:
        number = call.step.rpartition(":")[2]
        return (call.workflow, number, call.tier), (number, call.tier), (call.tier,)

    def steps(self, run: Run) -> list[list[Call]]:
        """The run's calls per step, each step's in cascade order."""
        by_step: dict[str, list[Call]] = defaultdict(list)
        for call in run.calls:
            by_step[call.step].append(call)
        return [sorted(calls, key=lambda c: self._rank(c.tier)) for calls in by_step.values()]

    def rate(self, call: Call, tier: str) -> float:
        """P(a call at ``tier`` climbs a tier), from the calls of ``call``'s route and step
        number at that tier, else of its step number, else of the tier."""
        for key in self._keys(replace(call, tier=tier)):
            escalated, calls = self._up.get(key, (0, 0))
            if calls:
                return escalated / calls
        return 0.0

    def price(self, call: Call, tier: str) -> float:
        """What ``call`` would have cost at ``tier``: an escalated call resends the step's prompt
        (the same input tokens, nothing cached) and answers at about the same length, so its
        own tokens priced at that tier's model (the model history used for it)."""
        model = self._models.get(tier)
        if model is None:
            return 0.0
        return float(self.cost(replace(call, tier=tier, model=model, tokens_cached=0)))

    def ladders(self, run: Run) -> list[tuple[float, list[float], list[float]]]:
        """Each step as (its fixed cost, a call's price at each tier of the ladder, the rate
        of climbing from each tier): tiers below the step's first are priced 0 and passed."""
        out = []
        for calls in self.steps(run):
            first = calls[0]
            start = self._rank(first.tier)
            fixed = float(sum(self.cost(c) for c in calls[1:] if c.tier == first.tier))  # a tier asked twice
            made = {c.tier: self.cost(c) for c in reversed(calls)}
            if start >= len(self.ladder):  # a tier outside the ladder: what it cost, no climb
                out.append((fixed + made[first.tier], [0.0] * len(self.ladder), [0.0] * len(self.ladder)))
                continue
            prices = [0.0 if i < start else float(made.get(t, self.price(first, t))) for i, t in enumerate(self.ladder)]
            rates = [1.0 if i < start else self.rate(first, t) for i, t in enumerate(self.ladder)]
            out.append((fixed, prices, rates))
        return out

    def draws(self, runs: Sequence[Run], rng: np.random.Generator, count: int,
              chunk: int = 256) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``count`` draws of what each run costs again (its steps and tokens, each step's
        climb drawn at its rate), shape (count, len(runs)), and each run's expected cost."""
        steps = [(i, ladder) for i, run in enumerate(runs) for ladder in self.ladders(run)]
        out = np.zeros((count, len(runs)))
        means = np.zeros(len(runs))
        width = len(self.ladder)
        for start in range(0, len(steps), chunk):
            part = steps[start:start + chunk]
            owner = np.array([i for i, _ in part])
            fixed = np.array([f for _, (f, _, _) in part])
            prices = np.array([p for _, (_, p, _) in part]).reshape(len(part), width)
            rates = np.array([r for _, (_, _, r) in part]).reshape(len(part), width)
            # reach[l]: the step got to ladder position l (position 0 always; then each climb)
            climbs = rng.random((count, len(part), width - 1)) < rates[None, :, :-1]
            reach = np.concatenate([np.ones((count, len(part), 1), dtype=bool),
                                    np.cumprod(climbs, axis=2).astype(bool)], axis=2)
            cost = fixed[None, :] + (reach * prices[None, :, :]).sum(axis=2)
            np.add.at(out.T, owner, cost.T)  # each step's draws onto its run's column
            np.add.at(means, owner, [_expected_step(*ladder) for _, ladder in part])
        return out, means

    def expected(self, run: Run) -> float:
        """The run's cost with each step's climb up the cascade at its expected rate: the
        step's own calls where it made them, its prompt at the tier's price where it did not."""
        return sum(_expected_step(fixed, prices, rates) for fixed, prices, rates in self.ladders(run))


def _expected_step(fixed: float, prices: Sequence[float], rates: Sequence[float]) -> float:
    """A step's fixed cost plus each ladder position's price times the chance of reaching it."""
    total, reach = fixed, 1.0
    for price, rate in zip(prices, rates, strict=True):
        total += reach * price
        reach *= rate
    return total


@dataclass(frozen=True)
class AgentTicket:
    """A ticket the dry run sends to the agent: its route and its per-ticket cap."""

    ticket_id: str
    route: str
    cap_micros: int


@dataclass
class Estimate:
    agent_tickets: int
    estimated_micros: int
    low_micros: int  # 2.5th percentile of the bootstrap
    p95_micros: int
    max_micros: int
    batch_api_micros: int
    history_runs: int
    routes_without_history: list[str]
    mean_calls: float
    mean_run_s: float

    def as_json(self) -> dict[str, object]:
        usd = 1e6
        return {
            "estimated_cost_usd": round(self.estimated_micros / usd, 6),
            "estimated_cost_band_usd": [round(self.low_micros / usd, 6), round(self.p95_micros / usd, 6)],
            "estimated_cost_p95_usd": round(self.p95_micros / usd, 6),
            "max_cost_usd": round(self.max_micros / usd, 6),
            "batch_api_cost_usd": round(self.batch_api_micros / usd, 6),
            "history_runs": self.history_runs,
            "routes_without_history": self.routes_without_history,
        }


def estimate(tickets: Sequence[AgentTicket], runs: Sequence[Run], pricing: PricingTable,
             model_of: Callable[[str, str], str], seed: int = 7,
             group_of: Mapping[str, str] | None = None, averaged: bool = False,
             ladder: Sequence[str] = LADDER) -> Estimate:
    """Price ``tickets`` from past ``runs``; ``model_of(tier, recorded_model)`` is the model
    the replay's lane uses for a tier (the recorded one when the lane does not change it).

    A ticket that has run before (the original, or an earlier replay) is expected to cost
    what its own runs cost: the tickets a replay sends to the agent are not an average
    sample of their route (the easy ones are answered by the cache the first run filled),
    and pricing them at the route's mean underestimated a replay by 45 %. Any other ticket
    is expected at its route's mean. The band draws each ticket's cost from its route's
    runs, shifted to the ticket's own expectation.

    With ``group_of`` (ticket id -> a group, e.g. the resolution key its original answer
    gave), a ticket whose group has ``MIN_RUNS`` runs is expected at the group's mean
    instead: the tickets the cache still sends to the agent were selected *by* their first
    run (an answer the cache trusts deflects the ticket now), so that run is not a fair
    draw of what the next one costs; its group's runs, deflected or not, are.

    With ``averaged``, a ticket's own runs count at :meth:`Cascade.expected` (their steps and
    tokens, the cascade's climbs at their route's rates) instead of what they cost. Measured
    beside the default (bench/replay_estimate_bench.py, README "Replay and backfill"), it
    did no better: the replay's own draw dominates the error, so it is not the default."""
    def sum_cost(calls: Sequence[Call]) -> int:
        return sum(pricing.cost_micros(model_of(c.tier, c.model), c.tokens_in, c.tokens_out, c.tokens_cached)
                   if model_of(c.tier, c.model) in pricing.prices else 0 for c in calls)

    def cost(run: Run) -> int:
        return sum_cost(run.calls)

    by_route: dict[str, list[int]] = defaultdict(list)
    by_ticket: dict[str, list[int]] = defaultdict(list)
    by_group: dict[str, list[int]] = defaultdict(list)
    groups = group_of or {}
    model = Cascade(runs, lambda c: sum_cost([c]), ladder)
    cascade = model if averaged else None
    latest: dict[str, Run] = {}  # each ticket's last run: its steps and tokens, for the band
    for run in runs:
        priced = cost(run)
        ticket = run.run_id.split("@", 1)[0]
        latest[ticket] = run
        by_route[run.workflow].append(priced)
        by_ticket[ticket].append(round(cascade.expected(run)) if cascade is not None else priced)
        if ticket in groups:
            by_group[groups[ticket]].append(priced)
    everything = [c for costs in by_route.values() for c in costs] or [0]
    lacking = sorted({t.route for t in tickets if len(by_route.get(t.route, ())) < MIN_RUNS
                      and t.ticket_id not in by_ticket})
    samples = {route: np.array(by_route[route] if len(by_route.get(route, ())) >= MIN_RUNS else everything,
                               dtype=np.float64)
               for route in {t.route for t in tickets}}
    def expectation(ticket: AgentTicket) -> tuple[float, int]:
        """The ticket's expected cost, and how many runs it rests on."""
        group = by_group.get(groups.get(ticket.ticket_id, ""), [])
        if len(group) >= MIN_RUNS:
            return float(np.mean(group)), len(group)
        if ticket.ticket_id in by_ticket:
            # averaged: the cascade's draws are out of it; what is left of a run is its
            # structure, which a replay repeats (counted here as many runs)
            runs_behind = len(by_ticket[ticket.ticket_id]) * (AVERAGED_WEIGHT if cascade is not None else 1)
            return float(np.mean(by_ticket[ticket.ticket_id])), runs_behind
        return float(samples[ticket.route].mean()), len(samples[ticket.route])

    found = [expectation(t) for t in tickets]
    expected = np.array([value for value, _ in found])
    # A replay's cost is one new draw per ticket, and an expectation resting on k runs is off
    # by a draw's spread over sqrt(k): the band spreads each ticket by sqrt(1 + 1/k) draws.
    # (Without the second term the band missed the replay's cost in 2 of 3 rounds of
    # bench/replay_estimate_bench.py, where most expectations rest on one earlier run.)
    spread = np.array([np.sqrt(1 + 1 / max(1, k)) for _, k in found])
    rng = np.random.default_rng(seed)
    totals = np.zeros(DRAWS)
    # A ticket with a run of its own: its steps again, each step's climb up the cascade drawn
    # at its route's rate (the climbs are the noise: a handful of strong-tier calls swing a
    # window's total), around its expectation.
    # The expectation itself rests on k earlier draws: it is off by their mean's deviation,
    # drawn as a second set (for k = 1 exactly: the difference of two draws, symmetric, where
    # one draw scaled by sqrt(2) kept the cascade's skew and held the replay's cost too rarely:
    # tests/unit/test_replay.py).
    known = [i for i, t in enumerate(tickets) if t.ticket_id in latest]
    if known:
        again = [latest[tickets[i].ticket_id] for i in known]
        drawn, means = model.draws(again, rng, DRAWS)
        earlier, _ = model.draws(again, rng, DRAWS)
        behind = np.array([max(1, found[i][1]) for i in known], dtype=np.float64)
        deviation = (drawn - means) - (earlier - means) / np.sqrt(behind)
        # (clipped as a whole, not per ticket: a ticket's own expectation may sit below the
        # strong-tier call its earlier run made, and clipping each would bias the sum upwards)
        totals += np.maximum(expected[known].sum() + deviation.sum(axis=1), 0)
    # Any other ticket: a past run of its route, shifted to the route's mean.
    for route in samples:
        members = np.array([i for i, t in enumerate(tickets) if t.route == route and t.ticket_id not in latest])
        if len(members) == 0:
            continue
        values = samples[route]
        centred = values - values.mean()
        n = len(members)
        if n * DRAWS <= 4_000_000:
            drawn = rng.choice(centred, size=(DRAWS, n), replace=True) * spread[members] + expected[members]
            totals += np.maximum(drawn, 0).sum(axis=1)
        else:  # a large window: the sum of n draws is normal to within a fraction of a percent
            totals += rng.normal(expected[members].sum(), np.sqrt(float((spread[members] ** 2).sum())) * values.std(),
                                 size=DRAWS)
    low, p95 = (np.percentile(totals, [2.5, 95]) if len(tickets) else (0.0, 0.0))
    calls = [len(r.calls) for r in runs]
    seconds = [r.wall_s for r in runs]
    total = float(expected.sum()) if len(tickets) else 0.0
    return Estimate(
        agent_tickets=len(tickets), estimated_micros=round(total), low_micros=round(low), p95_micros=round(p95),
        max_micros=sum(t.cap_micros for t in tickets), batch_api_micros=round(total * BATCH_API_DISCOUNT),
        history_runs=len(runs), routes_without_history=lacking,
        mean_calls=float(np.mean(calls)) if calls else 1.0, mean_run_s=float(np.mean(seconds)) if seconds else 1.0)


def duration_s(agent_tickets: int, other_tickets: int, mean_calls: float, mean_run_s: float,
               rate_per_s: float, concurrency: int, deflect_per_s: float = 200.0) -> float:
    """How long the batch lane takes: its share of the provider's rate limit or its
    concurrency, whichever binds, plus the deflected tickets at ``deflect_per_s``."""
    by_rate = agent_tickets * mean_calls / rate_per_s
    by_concurrency = agent_tickets * mean_run_s / max(1, concurrency)
    return max(by_rate, by_concurrency) + other_tickets / deflect_per_s
