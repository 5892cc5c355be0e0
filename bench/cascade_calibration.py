"""Calibrate the cascade: per lower tier, the confidence from which its answers stand.

FrugalGPT accepts a cheap model's answer when a scorer says it is good enough. Ours is a
deterministic check whose threshold per tier is set here on labelled tickets, never on the
held-out ones:

1. banking77's tune part is cut again per intent (seed 11): 80 % are the intent
   classifier's examples, 20 % (about 2,000 tickets) are the calibration tickets;
2. the router decides each calibration ticket as in production; the ones it hands to the
   agent (its hard remainder: abstentions and judgement intents) are asked of every tier
   with the agent's own prompt (system prompt, router facts with the shortlist, the ticket);
3. every lower tier's answers are read at confidence thresholds from 0.50 to 0.99, and the
   cheapest setting is searched (FrugalGPT's least cost under a quality bound): thresholds
   per lower tier and the bar for the sensitive keys at which the cascade's answers
   (resolution key == label) are at least as precise as the top tier answering every
   ticket, over all those tickets and over those labelled with a sensitive key;
4. the cascade with those thresholds (and the policy's sensitive keys) is replayed over the
   same tickets: precision and cost against asking the top tier alone.

The provider is the configured one (the simulated one by default, at a tiny time scale;
``TICKETFLOW_LLM_PROVIDER=openai`` calibrates a real endpoint and pays for ~6,000 calls).

    PYTHONPATH=. .venv/bin/python bench/cascade_calibration.py --out bench/results

Prints the thresholds as ``TICKETFLOW_CASCADE_MIN_CONFIDENCE``; writes
``cascade_calibration.json`` and ``cascade_calibration.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.agent.factory import tiers
from pipeline.agent.machine import CascadePolicy, Final, interpret
from pipeline.agent.prompt import (
    CLASSIFY_PROMPT,
    KEY_SCHEMA,
    build_request,
    classifying,
    system_prompt,
)
from pipeline.cache.factory import build_embedder
from pipeline.cache.semantic_cache import PolicyBook
from pipeline.datasets import LabelledQuery, banking77_split, split_by_label
from pipeline.events import AgentStep, Message
from pipeline.llm.pricing import PricingTable
from pipeline.llm.simulated import MemoryBilling, SimulatedProvider
from pipeline.llm.types import LLMProvider, LLMResponse
from pipeline.pii import redact
from pipeline.routing.classifier import IntentClassifier
from pipeline.routing.engine import RouteEngine
from pipeline.routing.factory import build_rulebook
from pipeline.settings import Settings, load_settings
from pipeline.tools.banking import tool_specs
from processors.router import agent_facts

GRID = [round(x, 2) for x in np.arange(0.50, 1.00, 0.01)]
SHORTLISTS = (1, 2, 3, 5, 8, 10)  # candidate counts whose recall is reported


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def agent_tickets(settings: Settings, examples: list[LabelledQuery],
                  queries: list[LabelledQuery]) -> tuple[list[tuple[LabelledQuery, AgentStep]], dict[int, float]]:
    """The calibration tickets the router hands to the agent, each as its first step; and
    the shortlist's recall (label among the first k candidates) over those tickets."""
    batcher = build_embedder(settings)
    try:
        say(f"calibration: embedding {len(examples)} examples and {len(queries)} tickets...")
        policy = PolicyBook.load(settings.router_policy_file).default
        classifier = IntentClassifier.fit(batcher, examples, policy, cache_dir=settings.state_dir / "models",
                                          shortlist=max(SHORTLISTS))
        engine = RouteEngine(build_rulebook(settings, tool_specs()), classifier)
        texts = [redact(q.text) for q in queries]
        vectors = batcher.encode_sorted(texts)
    finally:
        batcher.close()
    decisions = engine.decide_many([(t, q.text, None, date.today()) for t, q in zip(texts, queries, strict=True)],
                                   vectors)
    picked = []
    found = dict.fromkeys(SHORTLISTS, 0)
    for i, (query, decision) in enumerate(zip(queries, decisions, strict=True)):
        rule = decision.rule
        if decision.kind != "agent" or rule is None:
            continue
        for k in SHORTLISTS:
            found[k] += query.label in decision.intent.candidates[:k]
        shortlist = dataclasses.replace(decision.intent,
                                        candidates=decision.intent.candidates[:settings.router_shortlist])
        decision = dataclasses.replace(decision, intent=shortlist)
        picked.append((query, AgentStep(
            step_id=f"calibration-{i}:0", ticket_id=f"calibration-{i}", tenant_id="calibration",
            workflow=rule.name, step=0, ticket=b"", model_tier="cheap", allowed_tools=[],
            transcript=[Message("user", query.text)], **agent_facts(decision))))
    return picked, {k: round(n / max(1, len(picked)), 4) for k, n in found.items()}


async def ask_all(provider: LLMProvider, models: dict[str, str], steps: list[AgentStep],
                  system: str) -> dict[str, list[LLMResponse]]:
    answers: dict[str, list[LLMResponse]] = {}
    for tier, model in models.items():
        say(f"calibration: asking the {tier} tier ({model}) {len(steps)} tickets...")
        requests = [build_request(s, model, CLASSIFY_PROMPT, (), f"{s.step_id}:{tier}:1", 40, KEY_SCHEMA)
                    if classifying(s) else build_request(s, model, system, (), f"{s.step_id}:{tier}:1", 400)
                    for s in steps]
        answers[tier] = list(await asyncio.gather(*(provider.complete(r) for r in requests)))
    return answers


def curve(confidences: np.ndarray, correct: np.ndarray) -> list[dict[str, float]]:
    rows = []
    for threshold in GRID:
        accepted = confidences >= threshold
        n = int(accepted.sum())
        rows.append({"threshold": threshold, "accepted_share": round(n / len(correct), 4),
                     "precision": round(float(correct[accepted].mean()), 4) if n else float("nan"), "accepted": n})
    return rows


def calibrate(settings: Settings, provider: LLMProvider) -> dict[str, Any]:
    tune, _ = banking77_split()
    examples, queries = split_by_label(tune, 0.2, seed=11)
    picked, recall = agent_tickets(settings, examples, queries)
    say(f"calibration: the router hands {len(picked)} of {len(queries)} tickets to the agent")
    models = tiers(settings)
    known = sorted(build_rulebook(settings, tool_specs()).intents())
    answers = asyncio.run(ask_all(provider, models, [s for _, s in picked], system_prompt()))
    labels = [q.label for q, _ in picked]
    top = list(models)[-1]
    replies: dict[str, list[Final | None]] = {}
    for tier, responses in answers.items():
        actions = [interpret(r, (), known, classifying(s)) for r, (_, s) in zip(responses, picked, strict=True)]
        replies[tier] = [a if isinstance(a, Final) else None for a in actions]

    def right(tier: str) -> np.ndarray:
        return np.array([r is not None and r.resolution_key == label for r, label in zip(replies[tier], labels,
                                                                                         strict=True)])

    target = float(right(top).mean())
    curves: dict[str, list[dict[str, float]]] = {}
    for tier in list(models)[:-1]:
        confidences = np.array([r.confidence if r is not None else -1.0 for r in replies[tier]])
        curves[tier] = curve(confidences, right(tier))
    pricing = PricingTable.load(settings.pricing_file)
    steps = [s for _, s in picked]
    routed = [s.intent for s in steps]
    thresholds, bar, searched, cost = search(models, answers, replies, labels, routed, pricing, target)
    policy = CascadePolicy(min_confidence=thresholds, sensitive_confidence=bar)
    # the same setting through the agent's own CascadePolicy: the vectorised search must agree
    replay = replay_cascade(policy, models, answers, replies, labels, steps, pricing)
    if cost and round(cost / 1e6, 4) != replay["cost_usd"]:
        raise RuntimeError(f"search and CascadePolicy disagree: ${cost / 1e6:.4f} vs ${replay['cost_usd']}")
    return {"calibration_tickets": len(queries), "agent_tickets": len(picked), "models": models,
            "shortlist": settings.router_shortlist, "shortlist_recall": recall,
            "top_tier_precision": round(target, 4), "thresholds": thresholds, "sensitive_confidence": bar,
            "settings_searched": searched, "cascade": replay, "curves": curves}


def search(models: dict[str, str], answers: dict[str, list[LLMResponse]], replies: dict[str, list[Final | None]],
           labels: list[str], routed: list[str | None], pricing: PricingTable,
           target: float) -> tuple[dict[str, float], float, int, int]:
    """The cheapest thresholds (every lower tier's, and the sensitive keys' bar) at which the
    cascade is at least as precise as the top tier alone, over all the agent tickets and over
    those labelled with a sensitive key (FrugalGPT's search: least cost under a quality bound).
    Ties go to the higher thresholds."""
    ladder = list(models)
    lower, top = ladder[:-1], ladder[-1]
    sensitive_keys = CascadePolicy().sensitive_keys
    label_sensitive = np.array([label in sensitive_keys for label in labels])
    cost = {t: np.array([pricing.cost_micros(models[t], r.tokens_in, r.tokens_out, r.tokens_cached)
                         for r in answers[t]]) for t in ladder}
    right = {t: np.array([r is not None and r.resolution_key == label for r, label in zip(replies[t], labels,
                                                                                        strict=True)])
             for t in ladder}
    conf = {t: np.array([r.confidence if r is not None else -1.0 for r in replies[t]]) for t in lower}
    touchy = {t: np.array([(r is not None and r.resolution_key in sensitive_keys) or (i in sensitive_keys)
                           for r, i in zip(replies[t], routed, strict=True)]) for t in lower}
    top_sensitive = float(right[top][label_sensitive].mean()) if label_sensitive.any() else 0.0
    best: tuple[float, tuple[float, ...]] | None = None
    choice: tuple[dict[str, float], float] = ({t: 1.0 for t in lower}, 1.0)
    searched = 0
    for values in itertools.product(GRID, repeat=len(lower)):
        for bar in [b for b in GRID if b >= 0.75]:
            searched += 1
            pending = np.ones(len(labels), dtype=bool)
            spent = np.zeros(len(labels))
            hit = np.zeros(len(labels), dtype=bool)
            for tier, threshold in zip(lower, values, strict=True):
                spent += np.where(pending, cost[tier], 0)
                keep = pending & (conf[tier] >= threshold) & ~(touchy[tier] & (conf[tier] < bar))
                hit |= keep & right[tier]
                pending &= ~keep
            spent += np.where(pending, cost[top], 0)
            hit |= pending & right[top]
            if hit.mean() < target or (label_sensitive.any() and hit[label_sensitive].mean() < top_sensitive):
                continue
            key = (float(spent.sum()), tuple(-v for v in (*values, bar)))
            if best is None or key < best:
                best = key
                choice = (dict(zip(lower, values, strict=True)), bar)
    return choice[0], choice[1], searched, round(best[0]) if best else 0


def replay_cascade(policy: CascadePolicy, models: dict[str, str], answers: dict[str, list[LLMResponse]],
                   replies: dict[str, list[Final | None]], labels: list[str], steps: list[AgentStep],
                   pricing: PricingTable) -> dict[str, Any]:
    ladder = list(models)
    cost_cascade = cost_top = 0
    correct = 0
    answered_by = dict.fromkeys(ladder, 0)
    sensitive = [0, 0, 0]  # tickets labelled with a sensitive key; right by the cascade; by the top tier
    for i, (label, step) in enumerate(zip(labels, steps, strict=True)):
        routed = step.intent
        index = 0
        while True:
            tier = ladder[index]
            response = answers[tier][i]
            cost_cascade += pricing.cost_micros(models[tier], response.tokens_in, response.tokens_out,
                                                response.tokens_cached)
            reply = replies[tier][i]
            if index == len(ladder) - 1:
                break
            verdict = policy.judge(reply if reply is not None else interpret(response, (), ()), tier, routed)
            if verdict.accepted:
                break
            index = len(ladder) - 1 if verdict.top_only else index + 1
        answered_by[tier] += 1
        hit = int(reply is not None and reply.resolution_key == label)
        top_reply = replies[ladder[-1]][i]
        top_hit = int(top_reply is not None and top_reply.resolution_key == label)
        correct += hit
        if label in policy.sensitive_keys:
            sensitive[0] += 1
            sensitive[1] += hit
            sensitive[2] += top_hit
        top = answers[ladder[-1]][i]
        cost_top += pricing.cost_micros(models[ladder[-1]], top.tokens_in, top.tokens_out, top.tokens_cached)
    return {"precision": round(correct / len(labels), 4), "answered_by": answered_by,
            "sensitive_tickets": sensitive[0],
            "sensitive_precision": round(sensitive[1] / sensitive[0], 4) if sensitive[0] else None,
            "sensitive_top_tier_precision": round(sensitive[2] / sensitive[0], 4) if sensitive[0] else None,
            "cost_usd": round(cost_cascade / 1e6, 4), "top_tier_only_cost_usd": round(cost_top / 1e6, 4),
            "cost_ratio": round(cost_cascade / cost_top, 4)}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tier, rows in report["curves"].items():
        xs = [r["accepted_share"] for r in rows if r["accepted"]]
        ys = [r["precision"] for r in rows if r["accepted"]]
        ax.plot(xs, ys, marker=".", label=f"{tier} ({report['models'][tier]})")
        chosen = next((r for r in rows if r["threshold"] == report["thresholds"][tier]), None)
        if chosen:
            ax.annotate(f"{chosen['threshold']:.2f}", (chosen["accepted_share"], chosen["precision"]),
                        textcoords="offset points", xytext=(6, -12))
            ax.scatter([chosen["accepted_share"]], [chosen["precision"]], s=60, zorder=3)
    ax.axhline(report["top_tier_precision"], color="grey", linestyle="--",
               label=f"top tier answers every ticket ({report['top_tier_precision']:.3f})")
    ax.set_xlabel("share of agent tickets whose answer the tier keeps (threshold lowered to the right)")
    ax.set_ylabel("precision of the kept answers")
    ax.set_title("Cascade calibration on banking77 tune tickets the router hands to the agent")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    settings = load_settings()
    if settings.llm_provider == "simulated":
        intents = sorted(build_rulebook(settings, tool_specs()).intents())
        provider: LLMProvider = SimulatedProvider(seed=settings.sim_seed, intents=intents, billing=MemoryBilling(),
                                                  time_scale=1e-4)
    else:
        import redis

        from pipeline.agent.factory import build_provider

        provider = build_provider(settings, redis.Redis(), [])
    report = calibrate(settings, provider)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cascade_calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "cascade_calibration.png")
    summary = {k: v for k, v in report.items() if k != "curves"}
    print(json.dumps(summary, indent=2))
    print(f"TICKETFLOW_CASCADE_MIN_CONFIDENCE='{json.dumps(report['thresholds'])}'")
    print(f"TICKETFLOW_CASCADE_SENSITIVE_CONFIDENCE={report['sensitive_confidence']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
