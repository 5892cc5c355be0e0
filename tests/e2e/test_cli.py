"""The command line as a user runs it: submit a CSV, read results as JSON Lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.helpers import WorkerProcess, worker_env

pytestmark = pytest.mark.integration


def ticketflow(settings: Settings, *args: str, stdin: str | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], input=stdin,
                          capture_output=True, text=True, env=worker_env(settings), timeout=timeout)


def test_submit_csv_and_read_results(settings: Settings, tmp_path: Path) -> None:
    csv_file = tmp_path / "tickets.csv"
    csv_file.write_text("text,ticket_id,tenant_id,label\n"
                        "I am still waiting on my card?,c-1,acme,card_arrival\n"
                        "\"My card payment was declined, why?\",c-2,acme,declined_card_payment\n"
                        "How do I top up?,c-3,globex,top_up\n")
    submitted = ticketflow(settings, "submit", str(csv_file))
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted 3 tickets" in submitted.stderr

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        results = ticketflow(settings, "results", "--json", "--expect", "3", "--timeout", "90")
    finally:
        worker.stop()
    assert results.returncode == 0, results.stderr
    lines = [json.loads(line) for line in results.stdout.splitlines()]
    assert sorted(r["ticket_id"] for r in lines) == ["c-1", "c-2", "c-3"]
    by_id = {r["ticket_id"]: r for r in lines}
    # answered by the router's templates (no customer id: no lookup), no LLM
    assert (by_id["c-1"]["path"], by_id["c-1"]["resolution_key"]) == ("rule", "card_arrival")
    assert (by_id["c-2"]["path"], by_id["c-2"]["resolution_key"]) == ("rule", "declined_card_payment")
    assert by_id["c-3"]["path"] in {"rule", "agent"}
    assert {r["tenant_id"] for r in lines} == {"acme", "globex"}
    assert all(r["end_to_end_ms"] >= 0 and "intake" in r["stage_latency_ms"] for r in lines)


def test_results_times_out_non_zero_when_fewer_arrive(settings: Settings) -> None:
    results = ticketflow(settings, "results", "--expect", "1", "--timeout", "3")
    assert results.returncode == 1
    assert "only 0 of 1 tickets arrived" in results.stderr


def test_submit_reports_a_bad_file(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("body_text\nhello\n")
    result = ticketflow(settings, "submit", str(bad))
    assert result.returncode == 2 and "needs a header with a 'text' column" in result.stderr


def test_help_shows_environment_and_defaults(settings: Settings) -> None:
    main_help = ticketflow(settings, "--help")
    assert "TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS" in main_help.stdout
    demo_help = ticketflow(settings, "demo", "--help")
    assert "default: 1000" in demo_help.stdout


def test_dead_letter_redriven_after_a_fix_is_answered_once(settings: Settings, tmp_path: Path) -> None:
    body = "my card was declined " + "and again " * 8000  # ~80 KiB: over the default 64 KiB
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_text(json.dumps({"ticket_id": "big-1", "tenant_id": "acme", "body": body}) + "\n")
    assert ticketflow(settings, "submit", str(jsonl)).returncode == 0
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        listed = {}
        for _ in range(60):
            listed = json.loads(ticketflow(settings, "dlq", "list", "--json").stdout)
            if listed["count"]:
                break
            time.sleep(1)
    finally:
        worker.stop()
    assert listed["count"] == 1 and listed["by_error_class"] == {"InvalidTicket": 1}
    assert "over the limit of 65536" in listed["dead_letters"][0]["error_message"]

    # The fix: a larger body limit. Then redrive, twice: the second run sends nothing.
    fixed = settings.model_copy(update={"max_body_bytes": 256 * 1024})
    first = json.loads(ticketflow(fixed, "dlq", "redrive", "--json").stdout)
    second = json.loads(ticketflow(fixed, "dlq", "redrive", "--json").stdout)
    assert (first["redriven"], second["redriven"], second["already_redriven"]) == (1, 0, 1)
    env_worker = WorkerProcess(fixed, tmp_path / "worker2.log")
    env_worker.extra_env = {"TICKETFLOW_MAX_BODY_BYTES": str(256 * 1024)}
    env_worker.start()
    try:
        results = ticketflow(fixed, "results", "--json", "--expect", "1", "--timeout", "90")
    finally:
        env_worker.stop()
    [line] = results.stdout.splitlines()
    assert json.loads(line)["ticket_id"] == "big-1"


def test_tools_list_and_invalidate(settings: Settings, tmp_path: Path) -> None:
    from pipeline.adapters.redis_tool_cache import RedisToolCache
    from pipeline.runtime.context import redis_client

    listed = ticketflow(settings, "tools", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    tools = {t["name"]: t for t in json.loads(listed.stdout)["tools"]}
    assert tools["card_status"]["cached"] and not tools["card_status"]["side_effecting"]
    assert tools["refund"]["side_effecting"] and not tools["refund"]["cached"]

    cache = RedisToolCache(redis_client(settings), settings.redis_key_prefix())
    before = cache.data_version("cli-tenant", "cards")
    worker = WorkerProcess(settings, tmp_path / "worker.log", "tools").start()
    try:
        done = ticketflow(settings, "tools", "invalidate", "--tenant", "cli-tenant", "--source", "cards")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 60
        while cache.data_version("cli-tenant", "cards") == before:
            assert time.monotonic() < deadline, "the invalidation was not applied"
            time.sleep(0.2)
    finally:
        assert worker.stop() == 0
