"""Where the agent's money goes, for the last demo run: LLM spend per tier pattern of a step
(cheap only, cheap then strong = a cascade escalation, strong only = a strong-tier route),
read from ``llm.usage``. Run right after a demo (same topic prefix):

    PYTHONPATH=. .venv/bin/python bench/agent_costs.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from pipeline.client import TicketflowClient
from pipeline.events import UsageRecord
from pipeline.settings import load_settings


def main() -> int:
    client = TicketflowClient(load_settings())
    served = [u for u in client.events("llm.usage", UsageRecord, timeout_s=30)
              if u.kind == "llm" and u.outcome == "ok" and u.ticket_id and u.ticket_id.startswith("demo-")]
    if not served:
        print("no demo usage records on llm.usage", file=sys.stderr)
        return 1
    run = served[-1].ticket_id.split("-")[1] if served[-1].ticket_id else ""
    steps: dict[str, list[UsageRecord]] = {}
    for record in served:
        if record.ticket_id and record.ticket_id.startswith(f"demo-{run}-"):
            steps.setdefault(record.step, []).append(record)
    pattern_steps: Counter[str] = Counter()
    spend: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for records in steps.values():
        pattern = "+".join(sorted(r.record_id.rsplit(":", 1)[1] for r in records))
        pattern_steps[pattern] += 1
        for record in records:
            tier = record.record_id.rsplit(":", 1)[1]
            spend[f"{tier} call in {pattern} steps"] += record.cost_micros
            calls[tier] += 1
    total = sum(spend.values())
    report = {"run": run, "steps_by_pattern": dict(pattern_steps), "calls_by_tier": dict(calls),
              "spend_usd": {k: round(v / 1e6, 4) for k, v in spend.most_common()},
              "share": {k: round(v / total, 3) for k, v in spend.most_common()}, "total_usd": round(total / 1e6, 4)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
