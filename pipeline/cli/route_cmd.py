"""`ticketflow route explain|eval`: what the router decides for a text, and how well it routes."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from pipeline.cli.cache_cmd import progress as _progress
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("route", help="explain and evaluate the deterministic router",
                            description="The router's decisions, computed locally from the rules file "
                            "(TICKETFLOW_ROUTER_RULES_FILE) and the classifier's examples "
                            "(TICKETFLOW_ROUTER_EXAMPLES); no broker needed.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ex = actions.add_parser("explain", help="show the decision for one text and why")
    ex.add_argument("text")
    ex.add_argument("--customer-id", default=None, help="as if the ticket came from this customer")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.set_defaults(run=run_explain)
    ev = actions.add_parser("eval", help="deflection rate and precision on labelled queries (CSV text,label)")
    ev.add_argument("--queries", type=Path, required=True)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(run=run_eval)


def run_explain(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.factory import build_embedder
    from pipeline.routing.factory import build_engine

    batcher = build_embedder(settings)
    try:
        engine = build_engine(settings, batcher)
        text = args.text
        from pipeline.pii import redact

        redacted = redact(text)
        [decision] = engine.decide_many([(redacted, text, args.customer_id, date.today())],
                                        batcher.encode([redacted]))
    finally:
        batcher.close()
    report = decision.explain()
    if args.json:
        print(json.dumps(report))
        return 0
    sim = report["similarity"]
    print(f"intent:   {report['intent'] or 'none (abstained: ' + report['intent_reason'] + ')'}"
          f"   nearest {report['nearest_intent']} at {sim if sim is not None else '-'}")
    ents = ", ".join(f"{e['kind']}={e['value']}" for e in report["entities"]) or "none"
    print(f"entities: {ents}")
    rule = report["rule"]
    if rule is None:
        print(f"rule:     none -> escalate ({report['reason']})")
        return 0
    print(f"rule:     {rule['name']} (line {rule['line']}): when intent={rule['when_intent'] or 'any'}"
          f" entities={rule['when_entities'] or '-'}")
    print(f"action:   {report['action']}" + (f" {rule['tool']}({json.dumps(report['arguments'])})"
                                              if report["action"] == "tool" else ""))
    if report["action"] == "agent":
        print(f"agent:    lane {rule['lane']}, tier {rule['tier']}, budget {rule['budget']}, "
              f"tools {rule['allowed_tools']}")
    if report["answer"]:
        print(f"answer:   {report['answer']}")
    return 0


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cache.factory import build_embedder
    from pipeline.cache.labelled import read_labelled_rows
    from pipeline.routing.evaluation import evaluate
    from pipeline.routing.factory import build_engine

    rows = read_labelled_rows(args.queries)
    batcher = build_embedder(settings)
    try:
        engine = build_engine(settings, batcher)
        result = evaluate(engine, batcher.embedder, [q for q, _ in rows],
                          [raw.get("customer_id") or None for _, raw in rows], progress=_progress)
    finally:
        batcher.close()
    report = result.to_dict()
    if args.json:
        print(json.dumps(report))
    else:
        precision = report["precision"]
        print(f"deflection rate {report['deflection_rate']:.3f} ({report['deflected']} of {report['queries']}), "
              f"precision {precision if precision is None else f'{precision:.4f}'}")
        print(f"by action: {report['by_action']}; classifier abstained on {report['abstained']}")
        print(f"decision latency (no embedding): p50 {report['decision_p50_ms']} ms, "
              f"p99 {report['decision_p99_ms']} ms")
    return 0
