"""The agent's concurrency and lanes, in one worker's event loop, with real Redis ports.

1. throughput against concurrency: N steps through the step runner (simulated provider at
   its real latency, Redis budgets, step records, leases and the shared rate limiter) with at
   most C in flight, for C = 1 .. 512: steps per second and the provider's peak in-flight
   count. The rate limiter (``--rate`` calls/s per model) is the provider limit.
2. lanes: 5,000 batch steps queued at once, then interactive steps arriving at 20/s; how long
   each interactive step waits before its first LLM call starts (p50/p95/p99).

    PYTHONPATH=. .venv/bin/python bench/agent_bench.py --out bench/results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import services
from pipeline.agent.aio import LaneGate
from pipeline.agent.factory import build_runner
from pipeline.agent.runner import StepRunner
from pipeline.events import AgentStep, Message
from pipeline.llm.types import LLMRequest, LLMResponse
from pipeline.routing.factory import build_rulebook
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings, load_settings
from pipeline.tools.banking import tool_specs


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def steps(n: int, tag: str) -> list[AgentStep]:
    return [AgentStep(step_id=f"{tag}-{i}:0", ticket_id=f"{tag}-{i}", tenant_id="bench", workflow="fallback_agent",
                      step=0, ticket=b"", candidates=["exchange_rate"],
                      transcript=[Message("user", f"What exchange rate do you use? ({i})")])
            for i in range(n)]


class Timed:
    """Wraps a provider: when each request's first call started."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.started: dict[str, float] = {}

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.started.setdefault(request.request_id.split(":")[0], time.monotonic())
        response: LLMResponse = await self.inner.complete(request)
        return response


def make_runner(settings: Settings) -> StepRunner:
    tools = tool_specs()
    return build_runner(settings, redis_client(settings), tools, build_rulebook(settings, tools).intents())


def throughput(settings: Settings, levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        runner = make_runner(settings.model_copy(update={"topic_prefix": f"bench-{time.time_ns()}."}))
        count = max(200, 4 * level)
        work = steps(count, f"c{level}")

        async def run_all(runner: StepRunner = runner, work: list[AgentStep] = work, level: int = level) -> float:
            limit = asyncio.Semaphore(level)

            async def one(step: AgentStep) -> None:
                async with limit:
                    await runner.run(step)

            started = time.monotonic()
            await asyncio.gather(*(one(s) for s in work))
            return time.monotonic() - started

        elapsed = asyncio.run(run_all())
        provider = runner.provider
        rows.append({"concurrency": level, "steps": count, "seconds": round(elapsed, 2),
                     "steps_per_s": round(count / elapsed, 1),
                     "peak_in_flight": getattr(provider, "peak_in_flight", None)})
        say(f"  concurrency {level}: {rows[-1]}")
    return rows


def lanes(settings: Settings, batch: int, interactive: int) -> dict[str, Any]:
    runner = make_runner(settings.model_copy(update={"topic_prefix": f"bench-{time.time_ns()}."}))
    timed = Timed(runner.provider)
    runner.provider = timed
    gate = LaneGate(settings.agent_interactive_concurrency, settings.agent_batch_concurrency)

    async def scenario() -> list[float]:
        backlog = [asyncio.ensure_future(gate.run("batch", runner.run(s))) for s in steps(batch, "batch")]
        await asyncio.sleep(1.0)  # the batch lane is busy
        arrivals: dict[str, float] = {}
        urgent = []
        for s in steps(interactive, "live"):
            arrivals[s.ticket_id] = time.monotonic()
            urgent.append(asyncio.ensure_future(gate.run("interactive", runner.run(s))))
            await asyncio.sleep(0.05)
        await asyncio.gather(*urgent)
        for task in backlog:
            task.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)
        return [(timed.started[t] - arrivals[t]) * 1000 for t in arrivals]

    waits = asyncio.run(scenario())
    a = np.array(waits)
    return {"batch_waiting": batch, "interactive": interactive,
            **{f"wait_p{q}_ms": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)},
            "batch_started_meanwhile": sum(1 for k in timed.started if k.startswith("batch-"))}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["concurrency"] for r in rows], [r["steps_per_s"] for r in rows], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("steps in flight (concurrency limit)")
    ax.set_ylabel("agent steps per second")
    ax.set_title("one worker's agent throughput against concurrency (simulated LLM)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rate", type=float, default=200.0, help="provider limit, calls/s per model")
    parser.add_argument("--levels", default="1,8,32,128,256,512", help="concurrency limits (1 alone takes ~4 min)")
    args = parser.parse_args()
    settings = load_settings(llm_rate_per_s=args.rate, llm_rate_burst=int(args.rate),
                             tenant_daily_budget_micros=10**12)
    services.up(settings, adopt=True)
    args.out.mkdir(parents=True, exist_ok=True)
    say("throughput against concurrency...")
    rows = throughput(settings, [int(x) for x in args.levels.split(",")])
    say("lanes: 5,000 batch steps waiting, interactive steps arriving...")
    lane = lanes(settings, 5000, 100)
    say(f"  {lane}")
    report = {"provider_rate_per_s": args.rate, "throughput": rows, "lanes": lane}
    (args.out / "agent_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out / "agent_bench.png")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
