"""Reading committed offsets on assignment: a closing consumer is not a broken broker.

A graceful stop during a rebalance can deliver an assignment while ``close()`` runs; reading
the committed offsets then fails with ``_DESTROY`` (the handle is being destroyed). The worker
must leave cleanly (exit 0), not retry for 10 s and die; any other error is still retried, then
fatal.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.runtime.engine import Engine


class FailingConsumer:
    def __init__(self, code: int, failures: int) -> None:
        self.code, self.failures, self.calls = code, failures, 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code, "test"))
        return [TopicPartition(tp.topic, tp.partition, 42) for tp in partitions]


def committed(consumer: Any) -> list[TopicPartition] | None:
    fake_engine = SimpleNamespace(binding=SimpleNamespace(name="agent"))
    return Engine._committed(fake_engine, consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]


def test_an_assignment_during_close_is_ignored_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    consumer = FailingConsumer(KafkaError._DESTROY, failures=10)
    assert committed(consumer) is None
    assert consumer.calls == 1 and sleeps == []


def test_other_errors_are_retried_then_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    flaky = FailingConsumer(KafkaError._TIMED_OUT, failures=2)
    assert [tp.offset for tp in committed(flaky) or []] == [42]
    assert flaky.calls == 3 and sleeps == [1, 2]
    dead = FailingConsumer(KafkaError._TIMED_OUT, failures=10)
    with pytest.raises(KafkaException):
        committed(dead)
    assert dead.calls == 5


class ClosingConsumer(FailingConsumer):
    """A handle being destroyed: every call fails with ``_DESTROY``."""

    def __init__(self) -> None:
        super().__init__(KafkaError._DESTROY, failures=1_000)

    def pause(self, partitions: list[TopicPartition]) -> None:
        raise KafkaException(KafkaError(KafkaError._DESTROY, "test"))


def assigned(consumer: Any, *, concurrent: bool, paused: bool) -> dict[Any, Any]:
    fake_engine = SimpleNamespace(binding=SimpleNamespace(name="agent", concurrent=concurrent), ahead={},
                                  _paused=paused)
    fake_engine._committed = lambda c, p: Engine._committed(fake_engine, c, p)  # type: ignore[arg-type]
    Engine._assigned(fake_engine, consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    ahead: dict[Any, Any] = fake_engine.ahead
    return ahead


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_paused_engine_ignores_an_assignment_during_close(concurrent: bool) -> None:
    # paused (full or stalled) when close() delivers the assignment: neither the offsets'
    # read nor the pause of the new partitions may raise out of the rebalance callback
    assert assigned(ClosingConsumer(), concurrent=concurrent, paused=True) == {}


def test_a_paused_engine_pauses_what_it_is_assigned() -> None:
    class Pausing(FailingConsumer):
        def __init__(self) -> None:
            super().__init__(KafkaError._TIMED_OUT, failures=0)
            self.paused: list[TopicPartition] = []

        def pause(self, partitions: list[TopicPartition]) -> None:
            self.paused += partitions

    consumer = Pausing()
    ahead = assigned(consumer, concurrent=True, paused=True)
    assert list(ahead) == [("t", 0)] and [tp.partition for tp in consumer.paused] == [0]
