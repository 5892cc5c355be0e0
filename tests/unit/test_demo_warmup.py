"""The demo warms a broker it started before measuring (pipeline.demo_warmup): a broker that
has not carried a demo since it started is cold, one that has is warm, a restarted one (a new
pid) is cold again, and an external broker is never warmed by default. The warm-up's tickets
belong to a tenant of their own and never to the run's input."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import demo_warmup
from pipeline.datasets import banking77_split
from pipeline.settings import Settings, load_settings


def local(tmp_path: Path, pid: int | None) -> Settings:
    settings = load_settings(state_dir=tmp_path)
    if pid is not None:
        pid_file = tmp_path.resolve() / "kafka" / "broker.pid"
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{pid}\n")
    return settings


def test_a_broker_is_cold_until_it_carried_a_demo(tmp_path: Path) -> None:
    settings = local(tmp_path, os.getpid())  # a live process stands in for the broker
    assert demo_warmup.broker_is_cold(settings)
    demo_warmup.mark_warm(settings)
    assert not demo_warmup.broker_is_cold(settings)
    # restarted: another pid, cold again
    restarted = local(tmp_path, os.getppid())
    assert demo_warmup.broker_is_cold(restarted)


def test_no_broker_of_ours_is_not_warmed(tmp_path: Path) -> None:
    assert not demo_warmup.broker_is_cold(local(tmp_path, None))  # none running from this directory
    external = load_settings(state_dir=tmp_path, kafka_bootstrap_servers="broker.example:9092")
    assert not demo_warmup.broker_is_cold(external)
    demo_warmup.mark_warm(external)  # nothing to remember
    assert not (tmp_path / demo_warmup.MARKER).exists()


def test_warm_up_tickets_are_a_tenant_of_their_own_from_the_training_part() -> None:
    tickets = demo_warmup.warm_up_tickets("r1", 50)
    assert len(tickets) == 50 and len({t.ticket_id for t in tickets}) == 50
    assert {t.tenant_id for t in tickets} == {demo_warmup.WARM_UP_TENANT}
    tune, holdout = banking77_split()
    assert {t.body for t in tickets} <= {q.text for q in tune}
    assert not {t.body for t in tickets} & {q.text for q in holdout}  # never the demo's own questions
