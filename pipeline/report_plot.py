"""The report on one page a manager can read: what was answered how, what it cost, how fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PATH_COLOURS = {"cache": "#2b8a3e", "rule": "#5c940d", "tool": "#1971c2", "agent": "#e8590c", "escalated": "#c92a2a"}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    who = f"tenant {report['tenant']}" if report["tenant"] else "all tenants"
    deflection = report["deflection_rate"]
    fig.suptitle(_dollars(f"ticketflow, {who}, {report['since']} to {report['until']} (UTC)\n"
                 f"{report['tickets']:,} tickets, ${report['cost_usd']:.4f} "
                 f"(${report['cost_per_ticket_usd']:.6f} a ticket), "
                 f"{'-' if deflection is None else f'{100 * deflection:.0f} %'} answered without the LLM agent"),
                 fontsize=12)
    paths = report["by_path"]
    names = list(paths)
    colours = [PATH_COLOURS.get(n, "grey") for n in names]

    ax = axes[0][0]
    ax.bar(names, [paths[n]["tickets"] for n in names], color=colours)
    ax.set_title("Tickets by the path that answered them")
    for i, n in enumerate(names):
        ax.annotate(f"{100 * paths[n]['share']:.0f} %", (i, paths[n]["tickets"]), ha="center", va="bottom")

    ax = axes[0][1]
    ax.bar(names, [paths[n]["cost_usd"] for n in names], color=colours)
    ax.set_title("Cost by path (USD)")

    ax = axes[1][0]
    x = range(len(names))
    p50 = [paths[n]["latency_ms"].get("p50", 0) / 1000 for n in names]
    p95 = [paths[n]["latency_ms"].get("p95", 0) / 1000 for n in names]
    ax.bar([i - 0.2 for i in x], p50, width=0.4, color=colours, label="p50")
    ax.bar([i + 0.2 for i in x], p95, width=0.4, color=colours, alpha=0.45, label="p95")
    ax.set_xticks(list(x), names)
    ax.set_title("Time to answer by path (seconds; solid p50, light p95)")

    ax = axes[1][1]
    models = report["cost_by"]["model"]
    ax.barh(list(models)[::-1], [m["cost_usd"] for m in models.values()][::-1], color="#495057")
    ax.set_title("LLM spend by model (USD)")
    budget_lines = [f"{t}: {100 * d['used']:.2f} % of ${b['daily_budget_usd']:.2f} on {day}"
                    for t, b in report["budget"].items() for day, d in b["by_day"].items()
                    if d["used"] is not None][:4]
    audits = [f"{t}: cache precision {a['precision_estimate']:.3f} "
              f"[{a['precision_ci95'][0]:.3f}, {a['precision_ci95'][1]:.3f}] over {a['audited']} audited hits"
              for t, a in report["cache"]["audit"].items()][:3]
    notes = [f"LLM spend incl. cache audit ${report['audit_cost_usd']:.4f} and replays "
             f"${report['replay_cost_usd']:.4f}: ${report['llm_spend_usd']:.4f}", *budget_lines, *audits]
    fig.text(0.01, 0.005, _dollars("\n".join(notes)), fontsize=9, va="bottom")
    fig.tight_layout(rect=(0, 0.07 + 0.02 * len(notes), 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _dollars(text: str) -> str:
    """Dollar signs as text (matplotlib reads a pair of them as mathematics)."""
    return text.replace("$", r"\$")
