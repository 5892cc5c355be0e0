"""The HTTP gateway over real HTTP: `ticketflow serve` and `ticketflow worker` as processes, on
real Kafka and Redis. Contract (answers, tenancy, errors), the event stream, a property-based
run of schemathesis over the served OpenAPI document, and a kill -9 of the gateway while
requests wait."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.settings import Settings
from tests.helpers import WorkerProcess, free_port, worker_env

pytestmark = pytest.mark.integration


def ticketflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], capture_output=True, text=True,
                          env=worker_env(settings), timeout=60, check=False)


class GatewayProcess:
    def __init__(self, settings: Settings, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, extra_args: list[str] | None = None) -> GatewayProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "--log-level", "INFO", "serve",
                                          "--port", str(self.port), *(extra_args or [])],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={**worker_env(self.settings), **self.extra_env})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the gateway did not become healthy: " + self.log.read_text()[-3000:])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Stack:
    settings: Settings
    gateway: GatewayProcess
    worker: WorkerProcess
    key: str
    other_key: str

    def post(self, body: object, key: str | None = None, headers: dict[str, str] | None = None,
             params: dict[str, float] | None = None) -> httpx.Response:
        sent = {"Authorization": f"Bearer {key or self.key}"} if key != "" else {}
        sent.update(headers or {})
        return httpx.post(f"{self.gateway.url}/v1/tickets", json=body, headers=sent, params=params, timeout=90)


def new_key(settings: Settings, tenant: str) -> str:
    done = ticketflow(settings, "keys", "create", "--tenant", tenant, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["key"])


@pytest.fixture(scope="module")
def stack(live_services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import uuid

    from pipeline.admin import apply_topics, delete_topics

    settings = live_services.model_copy(update={"topic_prefix": f"test-gw-{uuid.uuid4().hex[:8]}."})
    apply_topics(settings)
    logs = tmp_path_factory.mktemp("gateway")
    worker = WorkerProcess(settings, logs / "worker.log").start()
    gateway = GatewayProcess(settings, logs / "gateway.log", {"TICKETFLOW_GATEWAY_RATE_PER_S": "50",
                                                              "TICKETFLOW_GATEWAY_RATE_BURST": "100"}).start()
    try:
        yield Stack(settings, gateway, worker, new_key(settings, "acme"), new_key(settings, "globex"))
    finally:
        gateway.stop()
        worker.stop()
        delete_topics(settings)


def test_a_posted_ticket_waits_for_its_answer_and_only_its_tenant_sees_it(stack: Stack) -> None:
    posted = stack.post({"ticket_id": "gw-1", "body": "What exchange rate do you use for card payments abroad?"},
                        params={"wait": 60})
    assert posted.status_code == 200, posted.text
    answer = posted.json()
    assert answer["status"] == "resolved" and answer["ticket_id"] == "gw-1"
    assert answer["path"] in ("cache", "rule", "tool", "agent", "escalated") and answer["answer"]
    assert posted.headers["Location"] == "/v1/tickets/gw-1"
    # the gateway's time apart from the pipeline's: the handler's time is the part before the
    # produce call, the pipeline's share and the wake-up (each rounded to 0.1 ms)
    timing = {name: float(value) for name, value in re.findall(r"(\w+);dur=([0-9.]+)", posted.headers["Server-Timing"])}
    assert set(timing) == {"pipeline", "handler", "admit", "wake"}, timing
    assert timing["pipeline"] > 0
    assert timing["handler"] == pytest.approx(timing["admit"] + timing["pipeline"] + timing["wake"], abs=0.3)
    mine = httpx.get(f"{stack.gateway.url}/v1/tickets/gw-1", headers={"Authorization": f"Bearer {stack.key}"})
    assert mine.status_code == 200 and mine.json()["answer"] == answer["answer"]
    theirs = httpx.get(f"{stack.gateway.url}/v1/tickets/gw-1", headers={"X-API-Key": stack.other_key})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    unknown = httpx.get(f"{stack.gateway.url}/v1/tickets/nope", headers={"X-API-Key": stack.key})
    assert unknown.status_code == 404


def test_without_a_valid_key_it_is_401_and_bad_input_is_a_clear_4xx(stack: Stack) -> None:
    body = {"body": "Where is my card?"}
    assert stack.post(body, key="").status_code == 401
    assert stack.post(body, key="tf_not-a-key").status_code == 401
    huge = stack.post({"body": "x" * (2 * 1024 * 1024)})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
    wrong = stack.post({"body": 42})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "body"
    tenant = stack.post({"body": "hello", "tenant_id": "globex"})
    assert tenant.status_code == 422 and tenant.json()["error"]["field"] == "tenant_id"
    assert "API key" in tenant.json()["error"]["message"]
    long_body = stack.post({"body": "y" * (stack.settings.max_body_bytes + 1)})  # intake's own limit
    assert long_body.status_code == 422 and long_body.json()["error"]["field"] == "body"
    blank = stack.post({"body": " \n\t "})  # intake would dead-letter it: never answered (schemathesis found it)
    assert blank.status_code == 422 and blank.json()["error"]["field"] == "body"
    bad_id = stack.post({"ticket_id": "has space", "body": "hi"})
    assert bad_id.status_code == 422 and bad_id.json()["error"]["field"] == "ticket_id"
    not_json = httpx.post(f"{stack.gateway.url}/v1/tickets", content=b"{not json",
                          headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"})
    assert not_json.status_code == 422
    surrogate = httpx.post(f"{stack.gateway.url}/v1/tickets", content=b'{"body": "hi \\ud800"}',
                           headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"})
    assert surrogate.status_code == 422  # valid JSON, not encodable as UTF-8
    assert stack.post(body, params={"wait": 61}).status_code == 422


def test_the_same_idempotency_key_gets_the_same_ticket(stack: Stack) -> None:
    body = {"body": "I was charged twice for the same purchase"}
    first = stack.post(body, headers={"Idempotency-Key": "k-1"})
    again = stack.post(body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["ticket_id"] == again.json()["ticket_id"]
    other = stack.post({"body": "something else"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409


def test_the_event_stream_shows_progress_and_resumes_after_the_last_event_id(stack: Stack) -> None:
    posted = stack.post({"ticket_id": "gw-sse", "body": "My card payment was declined at a shop, why?",
                         "customer_id": "C-00007"})
    assert posted.status_code == 202
    url = f"{stack.gateway.url}/v1/tickets/gw-sse/events"
    events = []
    with httpx.stream("GET", url, headers={"X-API-Key": stack.key}, timeout=90) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        current: dict[str, str] = {}
        for line in stream.iter_lines():
            if not line:
                if current:
                    events.append(current)
                    current = {}
                continue
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                current[name] = value
    names = [e["event"] for e in events]
    assert names[0] == "accepted" and names[-1] == "resolved", names
    assert "cache" in names
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # reconnecting with the last id seen gets only what came after it
    resumed = httpx.get(url, headers={"X-API-Key": stack.key, "Last-Event-ID": events[-2]["id"]}, timeout=30)
    assert [line for line in resumed.text.splitlines() if line.startswith("event:")] == ["event: resolved"]
    other = httpx.get(url, headers={"X-API-Key": stack.other_key}, timeout=30)
    assert other.status_code == 404


def test_health_metrics_and_openapi(stack: Stack) -> None:
    health = httpx.get(f"{stack.gateway.url}/healthz").json()
    assert health == {"status": "ok", "kafka": True, "redis": True, "fanout": True}
    metrics = httpx.get(f"{stack.gateway.url}/metrics").text
    assert "ticketflow_gateway_requests_total" in metrics
    spec = httpx.get(f"{stack.gateway.url}/openapi.json").json()
    assert {"/v1/tickets", "/v1/tickets/{ticket_id}", "/v1/tickets/{ticket_id}/events"} <= set(spec["paths"])


def test_a_tenant_over_its_rate_gets_429_with_retry_after(stack: Stack) -> None:
    key = new_key(stack.settings, "busy")
    import concurrent.futures

    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32))  # one client: httpx.post per
    # request builds an SSL context each time, and the client, not the gateway, was the bottleneck

    def post(i: int) -> httpx.Response:
        return client.post(f"{stack.gateway.url}/v1/tickets", json={"body": f"rate test {i}"},
                           headers={"Authorization": f"Bearer {key}"})

    with client, concurrent.futures.ThreadPoolExecutor(32) as pool:  # 300 at once: over the burst of 100
        responses = list(pool.map(post, range(300)))
    codes = [r.status_code for r in responses]
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "rate_limited"
    assert 202 in codes and 429 in codes and not [c for c in codes if c >= 500], Counter(codes)
    assert codes.count(202) < 250  # the burst and what refilled while they were sent, not all 300


def test_revoked_keys_are_refused(stack: Stack) -> None:
    key = new_key(stack.settings, "leaving")
    assert stack.post({"body": "hi there"}, key=key).status_code == 202
    key_id = next(k["key_id"] for k in json.loads(ticketflow(stack.settings, "keys", "list", "--json").stdout)
                  if k["tenant"] == "leaving")
    assert ticketflow(stack.settings, "keys", "revoke", key_id).returncode == 0
    deadline = time.monotonic() + 15  # gateways remember a key for 5 s
    while time.monotonic() < deadline and stack.post({"body": "hi"}, key=key).status_code != 401:
        time.sleep(0.5)
    assert stack.post({"body": "hi"}, key=key).status_code == 401
    listed = ticketflow(stack.settings, "keys", "list").stdout
    assert key not in listed and "revoked" in listed  # keys are never shown again


def test_the_gateway_killed_while_requests_wait_loses_no_accepted_ticket(stack: Stack, tmp_path: Path) -> None:
    import concurrent.futures

    second = GatewayProcess(stack.settings, tmp_path / "gateway-2.log").start()
    keys = [f"kill-{i}" for i in range(40)]  # no ticket ids: the gateway makes them

    def post(url: str, key: str, wait: int) -> tuple[int, str]:
        try:
            r = httpx.post(f"{url}/v1/tickets", params={"wait": wait},
                           json={"body": f"How long does a transfer to another bank take? ({key})"},
                           headers={"Authorization": f"Bearer {stack.key}", "Idempotency-Key": key}, timeout=90)
            return r.status_code, str(r.json().get("ticket_id", ""))
        except httpx.TransportError:
            return 0, ""

    # The worker is paused while the requests are posted and the gateway is killed, so that
    # they are still waiting when it dies: a warm pipeline answered all 40 within the second
    # before the kill, and the test then tested nothing.
    assert stack.worker.proc is not None
    stack.worker.proc.send_signal(signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
            futures = [pool.submit(post, second.url, key, 30) for key in keys]
            time.sleep(1.0)
            second.kill9()
            first = [f.result() for f in futures]
    finally:
        stack.worker.proc.send_signal(signal.SIGCONT)
    assert any(code == 0 for code, _ in first), "the kill came after every request was answered"
    # Clients retry on the surviving gateway with the same Idempotency-Key: the same ticket,
    # answered through Kafka.
    with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
        again = list(pool.map(lambda key: post(stack.gateway.url, key, 60), keys))
    assert all(code == 200 for code, _ in again), again
    ids = [ticket for _, ticket in again]
    assert len(set(ids)) == len(keys)
    assert all(before == after for (code, before), (_, after) in zip(first, again, strict=True) if code != 0)
    from pipeline.client import TicketflowClient

    client = TicketflowClient(stack.settings)
    answered = [r.event.ticket_id for r in client.results(ticket_ids=set(ids), drain=True)]
    client.close()
    assert sorted(answered) == sorted(ids)  # each exactly once


# -- property-based: schemathesis over the served OpenAPI document --------------------------

def test_every_operation_answers_within_its_spec_and_never_with_a_server_error(stack: Stack) -> None:
    """schemathesis generates requests from the document the gateway serves (valid and
    invalid bodies, parameters, headers) and runs every check it has on each response: no
    5xx, status codes, content types, headers and bodies as documented. (Its pytest plugin
    does not load with this pytest; the operations are driven through Hypothesis directly.)"""
    import hypothesis
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{stack.gateway.url}/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if operation.path.endswith("/events"):  # a stream: covered by its own test above
            continue

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def check(case: object) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {stack.key}"},  # type: ignore[attr-defined]
                                   timeout=75)  # ?wait= may hold a request up to 60 s

        check()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert {"POST /v1/tickets", "GET /v1/tickets/{ticket_id}", "GET /healthz"} <= set(tested), tested


def test_several_gateway_processes_share_the_port_answer_every_ticket_and_add_up_their_metrics(
        stack: Stack, tmp_path: Path) -> None:
    """`serve --workers 2`: the kernel spreads connections over two processes, each with its own
    fan-out reading every answer; /metrics, answered by either, counts both."""
    gateway = GatewayProcess(stack.settings, tmp_path / "gateway2.log", {"TICKETFLOW_GATEWAY_RATE_PER_S": "50",
                                                                       "TICKETFLOW_GATEWAY_RATE_BURST": "100"})
    gateway.start(["--workers", "2"])
    try:
        assert gateway.proc is not None
        children = subprocess.run(["pgrep", "-P", str(gateway.proc.pid)], capture_output=True, text=True)
        serving = [pid for pid in children.stdout.split()
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(serving) == 2, children.stdout
        ids = [f"gw-multi-{i}" for i in range(8)]

        def post(ticket_id: str) -> httpx.Response:  # a connection each, at once: the kernel picks the process
            return httpx.post(f"{gateway.url}/v1/tickets", params={"wait": 60}, timeout=90,
                              json={"ticket_id": ticket_id, "body": "How do I top up my account by card?"},
                              headers={"Authorization": f"Bearer {stack.key}"})

        with ThreadPoolExecutor(len(ids)) as pool:
            for posted in pool.map(post, ids):
                assert posted.status_code == 200, posted.text
        for ticket_id in ids:
            read = httpx.get(f"{gateway.url}/v1/tickets/{ticket_id}", headers={"X-API-Key": stack.key})
            assert read.status_code == 200 and read.json()["status"] == "resolved"
        for _ in range(4):  # whichever process answers, the sum over both
            text = httpx.get(f"{gateway.url}/metrics").text
            answered = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("ticketflow_gateway_requests_total{")
                           and 'route="/v1/tickets"' in line and 'status="200"' in line)
            assert answered == len(ids), text[:3000]
    finally:
        gateway.stop()
