"""The HTTP gateway while its dependencies fail: Redis killed (kill -9, restarted from its AOF)
and the broker stopped, while clients keep posting. A sick dependency is not bad input:

- every request the gateway cannot take is a 503 with ``Retry-After`` (never a 5xx of another
  kind, never a 202 for a ticket that was not produced), and /healthz says degraded;
- every ticket it accepted (202) is answered once through Kafka, including those resolved
  while Redis was down (the fan-out's writer of resolutions waits for Redis);
- a client retrying a refused request with the same ``Idempotency-Key`` gets one ticket,
  answered once, even when the refused produce reached the broker after all.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.admin import apply_topics, delete_topics
from pipeline.client import TicketflowClient
from pipeline.services.kafka_broker import KafkaBroker
from pipeline.settings import Settings
from tests.e2e.test_gateway import GatewayProcess, new_key
from tests.helpers import Supervisor, WorkerProcess
from tests.reliability.test_dependency_outages import redis_pid, services_up
from tests.reliability.test_rebalance_and_broker_restart import own_broker

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
__all__ = ["own_broker"]  # a fixture, used by name

QUESTIONS = ["What exchange rate do you use for card payments abroad?", "How do I top up my account by card?",
             "I was charged twice for the same purchase.", "Can I get a spare card for my partner?"]


class Client:
    def __init__(self, gateway: GatewayProcess, key: str) -> None:
        self.gateway = gateway
        self.headers = {"Authorization": f"Bearer {key}"}

    def post(self, n: int, idempotency_key: str | None = None) -> httpx.Response:
        headers = dict(self.headers)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return httpx.post(f"{self.gateway.url}/v1/tickets", json={"body": QUESTIONS[n % len(QUESTIONS)]},
                          headers=headers, timeout=60)

    def get(self, ticket_id: str) -> httpx.Response:
        return httpx.get(f"{self.gateway.url}/v1/tickets/{ticket_id}", headers=self.headers, timeout=30)

    def healthz(self) -> int:
        return httpx.get(f"{self.gateway.url}/healthz", timeout=30).status_code

    def all_answered(self, ids: set[str], timeout_s: float) -> dict[str, dict[str, object]]:
        answered: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + timeout_s
        while len(answered) < len(ids) and time.monotonic() < deadline:
            for ticket_id in ids - set(answered):
                got = self.get(ticket_id)
                if got.status_code == 200:
                    answered[ticket_id] = got.json()
            time.sleep(0.5)
        assert set(answered) == ids, f"unanswered: {sorted(ids - set(answered))}"
        return answered


def assert_refused_as_unavailable(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable" and dependency in error["message"], error


def answers_on_kafka(settings: Settings, ids: set[str]) -> Counter[str]:
    client = TicketflowClient(settings)
    return Counter(r.event.ticket_id for r in client.results(ticket_ids=ids, drain=True))


@pytest.fixture
def gateway_settings(live_services: Settings) -> Iterator[Settings]:
    settings = live_services.model_copy(update={"topic_prefix": f"test-gwo-{uuid.uuid4().hex[:8]}."})
    apply_topics(settings)
    yield settings
    delete_topics(settings)


def test_redis_killed_under_the_gateway_is_503_then_every_accepted_ticket_is_answered(
        gateway_settings: Settings, tmp_path: Path) -> None:
    settings = gateway_settings
    pid = redis_pid(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    gateway = GatewayProcess(settings, tmp_path / "gateway.log").start()
    try:
        api = Client(gateway, new_key(settings, "acme"))
        before = [api.post(n) for n in range(8)]
        assert [r.status_code for r in before] == [202] * 8
        accepted = {r.json()["ticket_id"] for r in before}
        os.kill(pid, signal.SIGKILL)  # the answers of these eight arrive while Redis is down
        time.sleep(1)
        during = [api.post(n, idempotency_key=f"during-{n}") for n in range(6)]
        for response in during:
            assert_refused_as_unavailable(response, "redis")
        assert api.healthz() == 503
        time.sleep(6)
        services_up(settings)
        assert api.healthz() == 200
        retried = [api.post(n, idempotency_key=f"during-{n}") for n in range(6)]  # the clients try again
        assert [r.status_code for r in retried] == [202] * 6
        accepted |= {r.json()["ticket_id"] for r in retried}
        answers = api.all_answered(accepted, timeout_s=180)
        # A gateway started now knows them too: the resolutions reached Redis, or its fan-out
        # finds them on Kafka.
        fresh = GatewayProcess(settings, tmp_path / "gateway-2.log").start()
        try:
            again = Client(fresh, api.headers["Authorization"].removeprefix("Bearer "))
            assert {t: again.get(t).status_code for t in accepted} == {t: 200 for t in accepted}
        finally:
            fresh.stop()
    finally:
        gateway.stop()
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert all(a["ticket_id"] == t and a["answer"] for t, a in answers.items())
    assert answers_on_kafka(settings, accepted) == {t: 1 for t in accepted}
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def test_the_broker_down_under_the_gateway_is_503_and_a_retried_request_is_one_ticket(
        own_broker: tuple[KafkaBroker, Settings], tmp_path: Path) -> None:
    broker, settings = own_broker
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env = {"TICKETFLOW_STUCK_BATCH_S": "20"}
    worker.start()
    gateway = GatewayProcess(settings, tmp_path / "gateway.log",
                             {"TICKETFLOW_GATEWAY_PRODUCE_TIMEOUT_S": "2"}).start()
    supervisor = Supervisor([worker]).__enter__()  # a worker whose Kafka client hangs exits to be restarted
    try:
        api = Client(gateway, new_key(settings, "acme"))
        before = [api.post(n) for n in range(6)]
        assert [r.status_code for r in before] == [202] * 6
        accepted = {r.json()["ticket_id"] for r in before}
        api.all_answered(accepted, timeout_s=120)
        broker.down()
        during = [api.post(n, idempotency_key=f"broker-{n}") for n in range(4)]
        for response in during:
            assert_refused_as_unavailable(response, "kafka")
        # what was answered before is still served (Redis and the fan-out's memory)
        assert {t: api.get(t).status_code for t in accepted} == {t: 200 for t in accepted}
        broker.up()
        deadline = time.monotonic() + 90
        retried: list[httpx.Response] = []
        for n in range(4):  # the clients try again, with the same keys, until the broker is back
            while True:
                response = api.post(n, idempotency_key=f"broker-{n}")
                if response.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(float(response.headers["Retry-After"]))
            retried.append(response)
        assert [r.status_code for r in retried] == [202] * 4, [r.text for r in retried]
        ids = {r.json()["ticket_id"] for r in retried}
        assert len(ids) == 4
        answers = api.all_answered(accepted | ids, timeout_s=240)
    finally:
        supervisor.__exit__(None, None, None)
        gateway.stop()
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert len(answers) == 10
    # The worker was idle through the outage and resumed on its own: no restart (the first
    # commit after a broker restart used to hang in librdkafka until the watchdog's restart).
    assert supervisor.restarts == 0, (tmp_path / "worker.log").read_text()[-3000:]
    # A refused produce may still have reached the broker (librdkafka keeps trying): the
    # retry carries the same ticket id, so intake drops the copy and it is answered once.
    assert answers_on_kafka(settings, accepted | ids) == {t: 1 for t in accepted | ids}
