"""CPU time of processes from /proc (Linux), for the benchmarks that report CPU shares."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (every thread, native ones included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[str, int, float]]:
    """Every process now: its command line, its parent's pid and its CPU seconds so far."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[int(entry.name)] = (command or entry.name, int(fields[1]),
                                  (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return found


def _snapshot() -> dict[int, tuple[str, float]]:
    return {pid: (command[:100], cpu) for pid, (command, _, cpu) in processes().items()}


def cpu_shares(seconds: float) -> list[tuple[float, int, str]]:
    """Each process's share of one core over the next ``seconds`` (most first)."""
    before, started = _snapshot(), time.time()
    time.sleep(seconds)
    after, elapsed = _snapshot(), time.time() - started
    shares = [((cpu - before.get(pid, (name, 0.0))[1]) / elapsed, pid, name) for pid, (name, cpu) in after.items()]
    return sorted((s for s in shares if s[0] > 0.005), reverse=True)
