"""How the demo splits the processors among worker processes (``--split-background``,
``--split-agent``): every processor runs, once per worker slot, and only the split-off
processes are marked for the lower priority (``--nice``)."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.demo import BACKGROUND_PROCESSORS, worker_groups
from pipeline.runtime.topology import OPT_IN, PROCESSORS

DEFAULT = {name for name in PROCESSORS if name not in OPT_IN}


@pytest.mark.parametrize("split_background", [False, True])
@pytest.mark.parametrize("split_agent", [False, True])
def test_every_default_processor_runs_once_in_a_split(split_background: bool, split_agent: bool) -> None:
    groups = worker_groups(1, split_background, split_agent)
    if not (split_background or split_agent):
        assert groups == [((), False)]  # one process, every processor
        return
    counts = Counter(name for names, _ in groups for name in names)
    assert set(counts) == DEFAULT and set(counts.values()) == {1}
    fast = [names for names, split_off in groups if not split_off]
    assert len(fast) == 1 and {"intake", "cache", "router", "tools"} <= set(fast[0])
    split_off = {name for names, off in groups if off for name in names}
    assert ("agent" in split_off) == split_agent
    assert (set(BACKGROUND_PROCESSORS) <= split_off) == split_background


def test_with_several_workers_the_split_processes_come_per_worker_and_background_once() -> None:
    groups = worker_groups(2, split_background=True, split_agent=True)
    counts = Counter(name for names, _ in groups for name in names)
    assert counts["intake"] == counts["cache"] == counts["agent"] == 2
    assert all(counts[name] == 1 for name in BACKGROUND_PROCESSORS)


@pytest.mark.parametrize("argv, message", [
    (["demo", "--nice", "25", "--split-agent"], "--nice must lie in [0, 19]"),
    (["demo", "--nice", "-5", "--split-agent"], "--nice must lie in [0, 19]"),
    (["demo", "--nice", "10"], "--nice applies to the processes"),
    (["demo", "--fault-rate", "1.5"], "--fault-rate must lie in [0, 1]"),
])
def test_bad_demo_options_are_refused_before_anything_starts(argv: list[str], message: str,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.cli.demo_cmd as demo_cmd
    from pipeline.cli.main import main

    def started(*_: object) -> None:
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo_cmd, "run_demo", started)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
