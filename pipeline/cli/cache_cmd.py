"""`ticketflow cache eval|calibrate|warm|purge|kb-version|policy|feedback`: measure, tune and manage the cache."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.adapters.redis_kb import RedisKbVersions
    from pipeline.cache.embedder import MicroBatcher
    from pipeline.cache.semantic_cache import PolicyBook
    from pipeline.datasets import LabelledQuery

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("cache", help="evaluate, calibrate, seed and purge the semantic cache",
                            description="The semantic cache's tools. `eval` and `calibrate` run locally on "
                            "labelled CSV files (text,label); `warm`, `purge` and `kb-version` act on the "
                            "running cache through the cache.updates topic.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    ev = actions.add_parser("eval", help="seed a fresh cache with labelled rows, look up labelled queries")
    ev.add_argument("--seed", type=Path, default=None, help="CSV text,label: the cache's entries (not with --live)")
    ev.add_argument("--queries", type=Path, required=True, help="CSV text,label: the lookups (with --live: the "
                    "stream, in its order)")
    ev.add_argument("--live", action="store_true",
                    help="start cold and learn from the pipeline's own answers, in stream order: rules (the "
                    "router's classifier, trusted) and the agent (simulated, provisional), written back after a "
                    "delay (pipeline/cache/live_eval.py); compares with the previous decision")
    ev.add_argument("--agent-accuracy", type=float, default=0.85, help="with --live (default 0.85)")
    ev.add_argument("--rule-lag", type=int, default=20, help="with --live: queries before a rule answer is an "
                    "entry (default 20: 0.2 s at 100 tickets/s)")
    ev.add_argument("--agent-lag", type=int, default=250, help="with --live: the same for the agent (default 250)")
    ev.add_argument("--second-opinion", action=argparse.BooleanOptionalAction, default=None,
                    help="judge with the router's classifier as the second opinion, as a worker's cache stage does "
                         "(default: TICKETFLOW_CACHE_SECOND_OPINION, on)")
    ev.add_argument("--opinion-examples", choices=("auto", "configured", "seed"), default="auto",
                    help="the classifier's labelled examples: the configured ones (TICKETFLOW_ROUTER_EXAMPLES), "
                         "or the seed (as a deployment for the seed's intents would configure them); auto: the "
                         "configured ones when they know at least 90 %% of the seed's keys, else the seed")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--plot", type=Path, default=None, help="write precision against hit rate to this PNG")
    ev.set_defaults(run=run_eval)

    cal = actions.add_parser("calibrate", help="pick hit-policy parameters from labelled data")
    cal.add_argument("--labels", type=Path, required=True, help="CSV text,label")
    cal.add_argument("--target-precision", type=float, required=True, help="e.g. 0.99")
    cal.add_argument("--folds", type=int, default=5)
    cal.add_argument("--paraphrase-similarity", type=float, default=0.9,
                     help="rows at least this similar stay in one fold (default 0.9)")
    cal.add_argument("--frontier", type=int, default=0, metavar="N",
                     help="also list the N admissible policies of highest hit rate (other trade-offs)")
    cal.add_argument("--second-opinion", action="store_true",
                     help="pick the bars for the router classifier's second opinion instead (router_probability, "
                          "corroborated_*, and the linear model's C), on top of the configured cache policy")
    cal.add_argument("--tenant", default=None, help="write the policy for this tenant (default: the default)")
    cal.add_argument("--write", type=Path, default=None,
                     help="merge the policy into this JSON file (TICKETFLOW_CACHE_POLICY_FILE)")
    cal.add_argument("--json", action="store_true", help="print one JSON object")
    cal.set_defaults(run=run_calibrate)

    warm = actions.add_parser("warm", help="seed a tenant's cache from a CSV (text,label[,answer])")
    warm.add_argument("--seed", type=Path, required=True)
    warm.add_argument("--tenant", required=True)
    warm.add_argument("--json", action="store_true")
    warm.set_defaults(run=run_warm)

    purge = actions.add_parser("purge", help="delete a tenant's entries (of one resolution key)")
    purge.add_argument("--tenant", required=True)
    purge.add_argument("--key", default=None, help="only entries with this resolution key")
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(run=run_purge)

    pol = actions.add_parser("policy", help="a tenant's audit: precision estimate, policy level and its history; "
                             "--reset undoes the audit's tightening")
    pol.add_argument("--tenant", required=True)
    pol.add_argument("--reset", action="store_true", help="back to the calibrated policy (level 0)")
    pol.add_argument("--forget", action="store_true", help="with --reset: forget the audit counts too")
    pol.add_argument("--json", action="store_true")
    pol.set_defaults(run=run_policy)

    fb = actions.add_parser("feedback", help="a support desk's verdict on an answer (to tickets.feedback)")
    fb.add_argument("--tenant", required=True)
    fb.add_argument("--ticket", required=True, help="the answered ticket's id")
    fb.add_argument("--verdict", choices=("confirm", "reject"), required=True)
    fb.add_argument("--entry", default=None, help="a cache hit's cache_entry_id (default: the entry written "
                    "from the ticket's own answer)")
    fb.add_argument("--correct-key", default=None, help="with reject: the key that would have been right")
    fb.set_defaults(run=run_feedback)

    kb = actions.add_parser("kb-version", help="show or set a tenant's knowledge-base version")
    kb.add_argument("--tenant", required=True)
    kb.add_argument("--set", dest="version", default=None,
                    help="new version: entries written under other versions are never served again")
    kb.set_defaults(run=run_kb_version)


def progress(stage: str, done: int, total: int) -> None:
    print(f"\r{stage}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)


def _policy_book(settings: Settings) -> PolicyBook:
    from pipeline.cache.semantic_cache import PolicyBook

    return PolicyBook.load(settings.cache_policy_file)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.evaluation import evaluate, plot
    from pipeline.cache.factory import build_embedder
    from pipeline.cache.labelled import read_labelled

    if args.live:
        return run_live_eval(args, settings)
    if args.seed is None:
        raise ConfigurationError("cache eval needs --seed (or --live)")
    seed, queries = read_labelled(args.seed), read_labelled(args.queries)
    print(f"cache eval: {len(seed)} seed rows, {len(queries)} queries; loading the embedder...", file=sys.stderr)
    batcher = build_embedder(settings)
    second_opinion = settings.cache_second_opinion if args.second_opinion is None else args.second_opinion
    try:
        opinions = None
        examples = None
        if second_opinion:
            from pipeline.routing.factory import build_classifier, router_examples

            examples = _opinion_examples(args.opinion_examples, {r.label for r in seed},
                                         {r.label for r in router_examples(settings)})
            print(f"cache eval: building the router's classifier (the second opinion) on the {examples} "
                  "examples...", file=sys.stderr)
            opinions = build_classifier(settings, batcher, seed if examples == "seed" else None)
        result = evaluate(batcher.embedder, seed, queries, _policy_book(settings).default, progress=progress,
                          opinions=opinions)
    finally:
        batcher.close()
    report = result.to_dict()
    report["second_opinion"] = second_opinion
    report["second_opinion_examples"] = examples
    if args.plot:
        plot(result, args.plot)
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        base = report["baseline"]
        low, high = report["precision_ci95"]
        print(f"policy:   hit rate {report['hit_rate']:.3f}  precision {report['precision']:.4f} "
              f"[95 % {low:.4f}, {high:.4f}]  false hits {report['false_hit_rate']:.4f}  "
              f"lookup p50 {report['p50_ms']:.2f} ms p99 {report['p99_ms']:.2f} ms")
        if report["out_of_scope_queries"]:
            low, high = report["out_of_scope_hit_rate_ci95"]
            print(f"out of scope (labels the seed does not have): {report['out_of_scope_hits']} of "
                  f"{report['out_of_scope_queries']} answered ({report['out_of_scope_hit_rate']:.4f}, "
                  f"[95 % {low:.4f}, {high:.4f}])")
        for wrong in report["false_hit_examples"][:5]:
            print(f"  wrong: {wrong['text']!r} ({wrong['label']}) served {wrong['served']} "
                  f"at similarity {wrong['similarity']}")
        print(f"baseline: hit rate {base['hit_rate']:.3f}  precision {base['precision']:.4f}  "
              f"false hits {base['false_hit_rate']:.4f}  (single cosine threshold {base['threshold']})")
        print(f"misses by reason: {report['miss_reasons']}")
    return 0


def _opinion_examples(choice: str, seed_keys: set[str], known: set[str]) -> str:
    """Whose examples the second opinion learns from (``cache eval --opinion-examples``)."""
    if choice != "auto":
        return choice
    return "configured" if len(seed_keys & known) >= 0.9 * len(seed_keys) else "seed"


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.calibrate import calibrate
    from pipeline.cache.labelled import read_labelled

    if not 0 < args.target_precision <= 1:
        raise ConfigurationError("--target-precision must lie in (0, 1]")
    rows = read_labelled(args.labels)
    if args.second_opinion:
        return run_calibrate_opinion(args, settings, rows)
    result = _with_embedder(settings, lambda batcher: calibrate(
        batcher, rows, args.target_precision, folds=args.folds, base=_policy_book(settings).default,
        progress=progress, paraphrase_similarity=args.paraphrase_similarity, frontier_size=args.frontier))
    report = result.to_dict()
    if args.frontier:
        report["frontier"] = [{"hit_rate": round(rate, 4), "precision": round(precision, 4),
                               "precision_low": round(low, 4), "policy": policy.to_dict()}
                              for rate, precision, low, policy in result.frontier]
    _write_policy(args, result.policy.to_dict(), report)
    if args.json:
        print(json.dumps(report))
    else:
        low, high = report["precision_ci95"]
        print(f"policy {report['policy']}\ncross-validated (paraphrase-grouped folds) hit rate "
              f"{report['hit_rate']:.3f}, precision {report['precision']:.4f} [95 % {low:.4f}, {high:.4f}] "
              f"(folds {report['fold_precisions']}), {report['candidates']} candidates; the lower bound needs "
              f"{report['rows_needed']} labelled rows at this precision and hit rate ({report['rows']} given)")
    return 0


def _with_embedder(settings: Settings, work: Callable[[MicroBatcher], T]) -> T:
    """Run ``work`` with the configured embedder (closed after); a ValueError is the user's."""
    from pipeline.cache.factory import build_embedder

    batcher = build_embedder(settings)
    try:
        return work(batcher)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    finally:
        batcher.close()


def _write_policy(args: argparse.Namespace, policy: dict[str, Any], report: dict[str, Any]) -> None:
    """With ``--write``: merge ``policy`` into the policy file (for ``--tenant`` or the default)."""
    if not args.write:
        return
    report["written"] = str(args.write)
    data = json.loads(args.write.read_text()) if args.write.exists() else {}
    if args.tenant:
        data.setdefault("tenants", {})[args.tenant] = policy
    else:
        data["default"] = policy
    args.write.write_text(json.dumps(data, indent=2) + "\n")


def run_calibrate_opinion(args: argparse.Namespace, settings: Settings, rows: list[LabelledQuery]) -> int:
    from pipeline.cache.calibrate_opinion import calibrate_opinion
    from pipeline.routing.factory import router_policy

    result = _with_embedder(settings, lambda batcher: calibrate_opinion(
        batcher, rows, args.target_precision, router_policy(settings), base=_policy_book(settings).default,
        folds=args.folds, progress=progress))
    report = result.to_dict()
    _write_policy(args, result.policy.to_dict(), report)
    if args.json:
        print(json.dumps(report))
    else:
        low, high = report["precision_ci95"]
        picked = {k: report["policy"][k] for k in ("router_probability", "corroborated_share",
                                                   "corroborated_agree", "corroborated_margin")}
        print(f"second opinion {picked}, TICKETFLOW_ROUTER_LINEAR_C={result.linear_c:g}\n"
              f"cross-validated (paraphrase-grouped folds, the classifier fitted on the other folds) hit rate "
              f"{report['hit_rate']:.3f}, precision {report['precision']:.4f} [95 % {low:.4f}, {high:.4f}]; "
              f"best by C {report['by_linear_c']}; the vote alone (no linear model) {report['vote_only']}")
    return 0


def run_live_eval(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.factory import build_embedder
    from pipeline.cache.labelled import read_labelled
    from pipeline.cache.live_eval import LiveSettings, evaluate_live
    from pipeline.routing.factory import build_classifier

    queries = read_labelled(args.queries)
    print(f"cache eval --live: {len(queries)} queries in stream order; loading the embedder and the router's "
          "classifier...", file=sys.stderr)
    batcher = build_embedder(settings)
    try:
        classifier = build_classifier(settings, batcher)
        report = evaluate_live(batcher, queries, classifier, _policy_book(settings).default,
                               LiveSettings(args.agent_accuracy, args.rule_lag, args.agent_lag), progress=progress)
    finally:
        batcher.close()
    if args.json:
        print(json.dumps(report))
    else:
        before = report["previous_decision"]
        low, high = report["precision_ci95"]
        print(f"live:     hit rate {report['hit_rate']:.3f}  precision {report['precision']:.4f} "
              f"[95 % {low:.4f}, {high:.4f}]  wrong hits {report['wrong_hits']}  by source {report['by_source']}")
        print(f"previous: hit rate {before['hit_rate']:.3f}  precision {before['precision']:.4f}  "
              f"wrong hits {before['wrong_hits']}  (no trust levels, no second opinion)")
        print(f"misses by reason: {report['miss_reasons']}; entries written {report['entries_written']} "
              f"({report['wrong_entries']} with a wrong key)")
    return 0


def run_policy(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.adapters.redis_audit import RedisAuditLedger
    from pipeline.cache.policy import tightened
    from pipeline.runtime.context import redis_client

    ledger = RedisAuditLedger(redis_client(settings), settings.redis_key_prefix())
    if args.reset:
        ledger.reset(args.tenant, counts=args.forget, reason="operator reset (ticketflow cache policy --reset)")
    state = ledger.state(args.tenant)
    low, high = state.interval
    report = {"tenant": args.tenant, "audited": state.audited, "agreed": state.agreed,
              "precision_estimate": round(state.estimate, 4), "precision_ci95": [round(low, 4), round(high, 4)],
              "target": settings.cache_audit_target, "policy_level": state.level,
              "policy": tightened(_policy_book(settings).for_tenant(args.tenant), state.level).to_dict(),
              "history": ledger.history(args.tenant)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"tenant {args.tenant}: {state.audited} audited hits, precision {state.estimate:.4f} "
              f"[95 % {low:.4f}, {high:.4f}], target {settings.cache_audit_target}, policy level {state.level}")
        for entry in report["history"]:
            print(f"  {entry}")
    return 0


def run_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.client import TicketflowClient
    from pipeline.events import CacheFeedback

    feedback = CacheFeedback(ticket_id=args.ticket, tenant_id=args.tenant, verdict=args.verdict,
                             created_at=int(time.time() * 1000), cache_entry_id=args.entry,
                             correct_key=args.correct_key, reviewer="cli")
    TicketflowClient(settings).feedback([feedback])
    print(f"feedback '{args.verdict}' on ticket {args.ticket} of tenant {args.tenant} sent to tickets.feedback")
    return 0


def run_warm(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.seeding import seed_updates
    from pipeline.client import TicketflowClient

    kb_version = _kb(settings).current(args.tenant)
    updates = seed_updates(args.seed, args.tenant, kb_version, int(time.time() * 1000), settings.cache_ttl_s * 1000)
    sent = TicketflowClient(settings).cache_updates(updates)
    print(json.dumps({"tenant": args.tenant, "entries": sent, "kb_version": kb_version}) if args.json
          else f"sent {sent} cache entries for tenant {args.tenant} (kb version {kb_version})")
    return 0


def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.client import TicketflowClient
    from pipeline.events import CacheUpdate

    update = CacheUpdate(tenant_id=args.tenant, op="purge", created_at=int(time.time() * 1000),
                         resolution_key=args.key)
    TicketflowClient(settings).cache_updates([update])
    what = f"entries with key {args.key}" if args.key else "all entries"
    print(json.dumps({"tenant": args.tenant, "key": args.key, "purged_before": update.created_at}) if args.json
          else f"purge of {what} of tenant {args.tenant} sent to every cache replica")
    return 0


def _kb(settings: Settings) -> RedisKbVersions:
    from pipeline.adapters.redis_kb import RedisKbVersions
    from pipeline.runtime.context import redis_client

    return RedisKbVersions(redis_client(settings), settings.redis_key_prefix(), refresh_s=0)


def run_kb_version(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.client import TicketflowClient
    from pipeline.events import CacheUpdate

    kb = _kb(settings)
    if args.version is None:
        print(kb.current(args.tenant))
        return 0
    kb.set(args.tenant, args.version)
    # Lookups filter on the version at once; the purge then frees the old entries' space.
    TicketflowClient(settings).cache_updates([CacheUpdate(
        tenant_id=args.tenant, op="purge", created_at=int(time.time() * 1000), kb_version=args.version)])
    print(f"tenant {args.tenant}: knowledge-base version {args.version}; older entries are no longer served")
    return 0
