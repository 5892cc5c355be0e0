"""`ticketflow serve`: the HTTP gateway; `ticketflow keys`: its API keys."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="the HTTP gateway: post tickets, wait for or stream their answers",
                           description="An independent process in front of Kafka: POST /v1/tickets produces to "
                           "tickets.ingress; answers come from the egress. The tenant comes from the API key "
                           "(ticketflow keys create). OpenAPI at /openapi.json.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1,
                       help="gateway processes sharing the port (default 1); each reads the egress itself, they "
                            "share Redis, and /metrics adds up all of them")
    serve.set_defaults(run=run_serve)
    keys = sub.add_parser("keys", help="the gateway's API keys (one tenant each)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new key for a tenant, printed once (stored hashed)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="key ids, tenants, and whether revoked (never the keys)")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a key by its id (gateways stop accepting it within 5 s)")
    revoke.add_argument("key_id")
    keys.set_defaults(run=run_keys)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from pipeline.errors import ValidationFailure
    from pipeline.gateway.app import SETTINGS_ENV, create_app

    common: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": "warning", "access_log": False,
                              "timeout_graceful_shutdown": 5}
    if args.workers < 1:
        raise ValidationFailure("--workers must be at least 1")
    if args.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return 0
    # uvicorn's supervisor spawns the processes; each builds the app from these settings, and
    # prometheus-client keeps their counters in files of one directory, read back by /metrics
    with tempfile.TemporaryDirectory(prefix="ticketflow-gateway-metrics-") as metrics_dir:
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("pipeline.gateway.app:app_from_environment", factory=True, workers=args.workers, **common)
    return 0


def run_keys(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.errors import ValidationFailure
    from pipeline.gateway.keys import ApiKeys
    from pipeline.runtime.context import redis_client

    keys = ApiKeys(redis_client(settings), settings.redis_key_prefix())
    if args.action == "create":
        try:
            key, info = keys.create(args.tenant)
        except ValueError as exc:
            raise ValidationFailure(str(exc)) from exc
        print(json.dumps({"key": key, **info.__dict__}) if args.json else
              f"{key}\n(tenant {info.tenant}, id {info.key_id}: shown once, store it now)")
        return 0
    if args.action == "list":
        found = keys.list()
        if args.json:
            print(json.dumps([k.__dict__ for k in found]))
        for k in found if not args.json else []:
            print(f"{k.key_id}  tenant={k.tenant}  {'revoked' if k.revoked_at else 'active'}")
        return 0
    revoked = keys.revoke(args.key_id)
    if revoked is None:
        raise ValidationFailure(f"no active key with id {args.key_id!r}")
    print(f"revoked {revoked.key_id} (tenant {revoked.tenant})")
    return 0
