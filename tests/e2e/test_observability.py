"""Observability against real programs nobody here wrote: Debian's Prometheus scrapes two real
workers, and Debian's Alertmanager receives an alert from the shipped rules.

- every PromQL query of the shipped Grafana dashboard returns data through Prometheus' HTTP API;
- LLM spend per tenant in Prometheus (summed over both workers) equals the accounting records
  on ``llm.usage``, to the micro-dollar;
- a tool's circuit breaker opens (its table is dropped), the shipped ``TicketflowToolBreakerOpen``
  rule fires, and the alert reaches Alertmanager and its webhook receiver.

The shipped rules are loaded as they are, except that every ``for:`` is set to 0 s (the test
cannot wait minutes); the ``for`` durations themselves are covered by promtool's unit tests
(tests/unit/test_prometheus_rules.py).
"""

from __future__ import annotations

import http.server
import json
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from pipeline.adapters.sql_bank import SqlBank
from pipeline.cache.audit import AUDIT_WORKFLOW
from pipeline.client import TicketflowClient
from pipeline.events import TicketSubmitted, UsageRecord, to_record
from pipeline.malformed import malformed_records
from pipeline.settings import REPO_ROOT, Settings
from pipeline.tools.demo_bank import seed_bank
from tests.helpers import WorkerProcess, free_port, ours, response_counts, sample_tickets

pytestmark = pytest.mark.integration

DASHBOARD = REPO_ROOT / "infra" / "grafana" / "dashboards" / "ticketflow-runtime.json"
RULES = REPO_ROOT / "infra" / "prometheus" / "alerts.yml"
WAITING = "I am still waiting on my card?"  # card_arrival; with a customer id: the card_status tool
TENANTS = ("acme", "globex")


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"{names[0]} is missing: `./run test` installs Debian's package for it")


def get_json(url: str, timeout_s: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Any, timeout_s: float, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


class Webhook:
    """Alertmanager's receiver: records every notification it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alert_names(self) -> set[str]:
        return {a["labels"]["alertname"] for n in self.received for a in n.get("alerts", [])}


class Program:
    """A real program on loopback, stopped (and its log kept) at the end."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, Webhook]]:
    hook = Webhook()
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "test", "group_by": ["alertname"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [
            {"url": f"http://127.0.0.1:{hook.port}/alerts", "send_resolved": False}]}]}))
    port = free_port()
    program = Program([binary("prometheus-alertmanager", "alertmanager"), f"--config.file={config}",
                       f"--storage.path={tmp_path / 'alertmanager-data'}",
                       f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                      tmp_path / "alertmanager.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("alertmanager ready", lambda: get_json(f"{url}/api/v2/status"), 30)
        yield url, hook
    finally:
        program.stop()
        hook.server.shutdown()


def rules_without_for(path: Path) -> Path:
    """The shipped rules with every ``for`` at 0 s (promtool's unit tests cover the durations)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules))
    return path


def start_prometheus(tmp_path: Path, targets: list[str], alertmanager_url: str) -> tuple[Program, str]:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_without_for(tmp_path / "alerts.yml"))],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager_url.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "ticketflow-workers", "static_configs": [{"targets": targets}]}]}))
    check = subprocess.run([binary("promtool"), "check", "config", str(config)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    program = Program([binary("prometheus"), f"--config.file={config}",
                       f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                       f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    wait_for("prometheus ready", lambda: _ready(url), 60)
    return program, url


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
        return bool(response.status == 200)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def mixed_tickets(tag: str) -> list[TicketSubmitted]:
    """Held-out-style banking77 tickets for two tenants (cache, rule, tool and agent paths),
    stamped now, with customer ids so that tool routes run."""
    now = int(time.time() * 1000)
    tickets = []
    for n, tenant in enumerate(TENANTS):
        for i, t in enumerate(sample_tickets(60, f"{tag}-{tenant}", tenant=tenant, seed=21 + n)):
            tickets.append(TicketSubmitted(**{**to_record(t), "customer_id": f"C-{1 + i % 20:05d}",
                                              "created_at": now}))
    random.Random(3).shuffle(tickets)
    return tickets


def test_a_real_prometheus_scrapes_two_workers_answers_every_panel_and_an_alert_reaches_alertmanager(
        settings: Settings, tmp_path: Path, alertmanager: tuple[str, Webhook]) -> None:
    alertmanager_url, hook = alertmanager
    bank_url = f"sqlite:///{tmp_path / 'bank.db'}"
    bank = SqlBank(bank_url)
    seed_bank(bank, list(TENANTS), customers=20, today=date.today())
    metrics_port = _two_free_ports()
    workers = []
    for n in range(2):
        worker = WorkerProcess(settings, tmp_path / f"worker-{n}.log")
        worker.extra_env = {"TICKETFLOW_METRICS_PORT": str(metrics_port), "TICKETFLOW_TOOLS_DATABASE_URL": bank_url,
                            "TICKETFLOW_TOOL_BREAKER_FAILURES": "2", "TICKETFLOW_TOOL_MAX_ATTEMPTS": "2",
                            "TICKETFLOW_CACHE_AUDIT_SHARE": "1.0"}
        workers.append(worker)
    workers[0].start()  # the second joins mid-stream: steps in flight move, and their paid replies are reused
    targets = [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{metrics_port + 1}"]  # a worker serves port + its slot
    prometheus, url = start_prometheus(tmp_path, targets, alertmanager_url)
    client = TicketflowClient(settings)
    try:
        tag = f"obs{uuid.uuid4().hex[:6]}"  # Redis keeps recorded replies by ticket id: new ids each run
        tickets = mixed_tickets(tag)
        # Questions asked twice, later, so that the cache (and its audit) answers some of them.
        again = [TicketSubmitted(**{**to_record(t), "ticket_id": f"{t.ticket_id}-again"}) for t in tickets[:60]]
        client.submit(tickets)
        for _ in client.results(expect=30, ticket_ids={t.ticket_id for t in tickets}, timeout_s=120):
            pass
        workers[1].start()
        counts = response_counts(client, {t.ticket_id for t in tickets}, timeout_s=240)
        assert sum(counts.values()) == len(tickets)
        client.submit(again)
        response_counts(client, {t.ticket_id for t in again}, timeout_s=120)
        bad = next(iter(malformed_records(1, client.serde, "obs-bad", int(time.time() * 1000))))
        client.send_raw(client.topic("tickets.ingress"), bad.key, bad.value)
        client.flush()
        assert wait_for("the malformed record dead-lettered",
                        lambda: [d for d in client.dead_letters(timeout_s=2)], 60)

        # The database loses the cards table: card lookups fail and the breaker opens.
        with bank.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE cards"))
        broken = [TicketSubmitted(ticket_id=f"{tag}-broken-{n}", tenant_id="acme", body=WAITING,
                                  customer_id=f"C-{n:05d}") for n in range(1, 7)]
        client.submit(broken)
        response_counts(client, {t.ticket_id for t in broken}, timeout_s=120)

        up = wait_for("both workers scraped", lambda: (lambda found: found if len(found) == 2 else None)(
            query(url, "up == 1")), 60)
        assert {s["metric"]["instance"] for s in up} == set(targets)

        # Every panel's query returns data (the rates need two scrapes after the events: wait).
        empty: list[str] = []

        def all_answer() -> bool:
            empty[:] = [f"{title}: {expr}" for title, expr in dashboard_queries() if not query(url, expr)]
            return not empty

        try:
            wait_for("every dashboard query answers", all_answer, 60, every_s=2)
        except AssertionError:
            raise AssertionError(f"dashboard queries without data: {empty}") from None

        # LLM spend per tenant: Prometheus (both workers) against the accounting records.
        ids = {t.ticket_id for t in [*tickets, *again, *broken]}
        calls = {u.record_id: u for u in client.events("llm.usage", UsageRecord, timeout_s=30)
                 if u.kind == "llm" and u.outcome == "ok" and ours(u.ticket_id, ids)}  # a reused reply: same id
        accounted: dict[str, int] = defaultdict(int)
        for usage in calls.values():
            accounted[usage.tenant_id] += usage.cost_micros
        assert set(accounted) == set(TENANTS), accounted

        scraped: dict[str, int] = {}

        def spend_matches() -> bool:
            scraped.update({s["metric"]["tenant"]: int(float(s["value"][1]))
                            for s in query(url, "sum by (tenant) (ticketflow_llm_cost_micros_total)")})
            return scraped == dict(accounted)

        try:
            wait_for("Prometheus spend per tenant == accounted", spend_matches, 30)
        except AssertionError:
            raise AssertionError(f"Prometheus {scraped} != accounted {dict(accounted)}") from None

        audit = sum(u.cost_micros for u in calls.values() if u.workflow == AUDIT_WORKFLOW)
        assert audit > 0  # every cache hit was audited (share 1.0): the audit's spend is its own workflow
        assert [float(s["value"][1]) for s in query(
            url, f'sum(ticketflow_llm_cost_micros_total{{workflow="{AUDIT_WORKFLOW}"}})')] == [audit]

        # The breaker alert: Prometheus fires it, Alertmanager holds it and notifies its receiver.
        firing = wait_for("TicketflowToolBreakerOpen firing in Prometheus", lambda: [
            a for a in get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
            if a["labels"]["alertname"] == "TicketflowToolBreakerOpen" and a["state"] == "firing"], 60)
        assert firing[0]["labels"]["tool"] == "card_status"
        held = wait_for("the alert in Alertmanager", lambda: [
            a for a in get_json(f"{alertmanager_url}/api/v2/alerts")
            if a["labels"]["alertname"] == "TicketflowToolBreakerOpen"], 60)
        assert held[0]["labels"]["severity"] == "critical"
        assert "circuit breaker open" in held[0]["annotations"]["summary"]
        wait_for("the webhook notified", lambda: "TicketflowToolBreakerOpen" in hook.alert_names(), 60)
    finally:
        prometheus.stop()
        for worker in workers:
            worker.stop()
        bank.close()


def _two_free_ports() -> int:
    """A port whose successor is free too (worker slots 0 and 1 serve port and port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")
