"""The Batch API path through a real worker (the simulated provider's jobs, in Redis), with the
worker killed (kill -9) while its jobs are in progress: after the restart every ticket is
answered once, no call was put into a job twice, each job line was billed once, every billed
call is accounted, and every call cost exactly the batch price (half the list price) of its
tokens."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from pipeline.adapters.redis_billing import RedisBilling
from pipeline.client import TicketflowClient
from pipeline.llm.pricing import PricingTable
from pipeline.runtime.context import redis_client
from pipeline.settings import Settings
from tests.helpers import WorkerProcess, accounted, assert_books_balance, response_counts
from tests.reliability.test_dependency_outages import held_out

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_a_worker_killed_while_its_batch_jobs_run_polls_them_after_restart(settings: Settings,
                                                                          tmp_path: Path) -> None:
    client = TicketflowClient(settings)
    redis = redis_client(settings)
    prefix = settings.redis_key_prefix()
    billing = RedisBilling(redis, prefix)
    billing.reset()
    tickets = [dataclasses.replace(t, lane="batch") for t in held_out("batchapi", 80)]
    ids = {t.ticket_id for t in tickets}
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    # a 10 s completion window (200 s x the tests' time scale of 0.05)
    worker.extra_env = {"TICKETFLOW_LLM_BATCH_API": "1", "TICKETFLOW_SIM_BATCH_WINDOW_S": "200",
                        "TICKETFLOW_AGENT_BATCH_CONCURRENCY": "512", "TICKETFLOW_LLM_BATCH_POLL_S": "10"}
    worker.start()
    try:
        client.submit(tickets)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(redis.scan_iter(f"{prefix}simbatch:job:*")):
            time.sleep(0.2)
        jobs_before = list(redis.scan_iter(f"{prefix}simbatch:job:*"))
        assert jobs_before, "no batch job was submitted"
        time.sleep(1.0)
        worker.kill9()  # its jobs are in progress (each takes 10 s)
        worker.start()
        counts = response_counts(client, ids, timeout_s=300)
    finally:
        code = worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert "polling batch" in log  # the restarted worker found the jobs it had submitted
    submitted = {key.decode().rsplit(":", 1)[-1]: int(redis.get(key) or 0)
                 for key in redis.scan_iter(f"{prefix}simbatch:submitted:*")}
    assert submitted and max(submitted.values()) == 1, {k: v for k, v in submitted.items() if v > 1}
    assert_books_balance(settings, client, billing, ids, counts, ["batchapi"])
    pricing = PricingTable.load(None)
    _, usage = accounted(client, ids)
    served = [u for u in usage if u.outcome == "ok"]
    assert served
    for record in served:
        full = pricing.cost_micros(record.model, record.tokens_in, record.tokens_out, record.tokens_cached)
        assert record.cost_micros == pricing.cost_micros(record.model, record.tokens_in, record.tokens_out,
                                                         record.tokens_cached, batch=True)
        assert abs(2 * record.cost_micros - full) <= 1  # half the interactive price of the same tokens
