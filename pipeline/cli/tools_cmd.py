"""`ticketflow tools list|invalidate`: the tools the rules may use, and telling their caches
that data changed."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("tools", help="list the tools; invalidate cached tool results",
                            description="The tool registry (the demo bank's tools) and its Redis result cache.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="every tool with its arguments, data source and cache rule")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(run=run_list)
    inv = actions.add_parser("invalidate", help="drop a tenant's cached results of one data source "
                             "(a ToolInvalidation on tools.invalidations)")
    inv.add_argument("--tenant", required=True)
    inv.add_argument("--source", required=True, help="a data source, e.g. cards, transfers, top_ups")
    inv.add_argument("--reason", default="operator")
    inv.set_defaults(run=run_invalidate)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.tools.banking import tool_specs

    registry = tool_specs()
    tools: list[dict[str, Any]] = []
    for name in registry.names():
        spec = registry.spec(name)
        tools.append({"name": name, "description": spec.description, "arguments": spec.parameters,
                      "returns": list(spec.returns), "data_source": spec.data_source,
                      "cached": spec.deterministic, "side_effecting": spec.side_effecting,
                      "timeout_s": spec.timeout_s})
    if args.json:
        print(json.dumps({"tools": tools}))
        return 0
    for tool in tools:
        kind = "side effect, idempotent, never cached" if tool["side_effecting"] else "lookup, cached"
        required = tool["arguments"].get("required", [])
        optional = [a for a in tool["arguments"].get("properties", {}) if a not in required]
        print(f"{tool['name']:<16} {kind}; data: {tool['data_source']}; args: {', '.join(required)}"
              + (f" [{', '.join(optional)}]" if optional else "") + f"\n{'':<16} {tool['description']}")
    return 0


def run_invalidate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.client import TicketflowClient

    client = TicketflowClient(settings)
    try:
        client.invalidate_tools(args.tenant, args.source, args.reason)
    finally:
        client.close()
    print(f"invalidated {args.source} for {args.tenant}")
    return 0
