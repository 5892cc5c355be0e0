"""`ticketflow cache eval|calibrate|warm|purge|kb-version`: measure, tune and manage the cache."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.adapters.redis_kb import RedisKbVersions
    from pipeline.cache.semantic_cache import PolicyBook


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("cache", help="evaluate, calibrate, seed and purge the semantic cache",
                            description="The semantic cache's tools. `eval` and `calibrate` run locally on "
                            "labelled CSV files (text,label); `warm`, `purge` and `kb-version` act on the "
                            "running cache through the cache.updates topic.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    ev = actions.add_parser("eval", help="seed a fresh cache with labelled rows, look up labelled queries")
    ev.add_argument("--seed", type=Path, required=True, help="CSV text,label: the cache's entries")
    ev.add_argument("--queries", type=Path, required=True, help="CSV text,label: the lookups")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--plot", type=Path, default=None, help="write precision against hit rate to this PNG")
    ev.set_defaults(run=run_eval)

    cal = actions.add_parser("calibrate", help="pick hit-policy parameters from labelled data")
    cal.add_argument("--labels", type=Path, required=True, help="CSV text,label")
    cal.add_argument("--target-precision", type=float, required=True, help="e.g. 0.99")
    cal.add_argument("--folds", type=int, default=5)
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

    seed, queries = read_labelled(args.seed), read_labelled(args.queries)
    print(f"cache eval: {len(seed)} seed rows, {len(queries)} queries; loading the embedder...", file=sys.stderr)
    batcher = build_embedder(settings)
    try:
        result = evaluate(batcher.embedder, seed, queries, _policy_book(settings).default, progress=progress)
    finally:
        batcher.close()
    report = result.to_dict()
    if args.plot:
        plot(result, args.plot)
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        base = report["baseline"]
        print(f"policy:   hit rate {report['hit_rate']:.3f}  precision {report['precision']:.4f}  "
              f"false hits {report['false_hit_rate']:.4f}  lookup p50 {report['p50_ms']:.2f} ms "
              f"p99 {report['p99_ms']:.2f} ms")
        print(f"baseline: hit rate {base['hit_rate']:.3f}  precision {base['precision']:.4f}  "
              f"false hits {base['false_hit_rate']:.4f}  (single cosine threshold {base['threshold']})")
        print(f"misses by reason: {report['miss_reasons']}")
    return 0


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.calibrate import calibrate
    from pipeline.cache.factory import build_embedder
    from pipeline.cache.labelled import read_labelled

    if not 0 < args.target_precision <= 1:
        raise ConfigurationError("--target-precision must lie in (0, 1]")
    rows = read_labelled(args.labels)
    batcher = build_embedder(settings)
    try:
        result = calibrate(batcher, rows, args.target_precision, folds=args.folds,
                           base=_policy_book(settings).default, progress=progress)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    finally:
        batcher.close()
    report = result.to_dict()
    if args.write:
        data = json.loads(args.write.read_text()) if args.write.exists() else {}
        if args.tenant:
            data.setdefault("tenants", {})[args.tenant] = result.policy.to_dict()
        else:
            data["default"] = result.policy.to_dict()
        args.write.write_text(json.dumps(data, indent=2) + "\n")
        report["written"] = str(args.write)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"policy {report['policy']}\ncross-validated hit rate {report['hit_rate']:.3f}, precision "
              f"{report['precision']:.4f} (folds {report['fold_precisions']}), {report['candidates']} candidates")
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
    from pipeline.runtime.topology import redis_client

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
