"""The fan-out decodes resolutions as they come and progress records only when someone asks:
an event stream listening to the ticket, or a stream resumed from its history."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.events import AgentStep, TicketResolved, TicketSubmitted, to_record
from pipeline.gateway.fanout import ACCEPTED, AGENT, CACHE, RESOLVED, ROUTED, FanOut
from pipeline.runtime.worker import make_serde
from pipeline.settings import Settings

PREFIX = "t."


class _Record:
    """What confluent-kafka's consumer returns, as far as the fan-out reads it."""

    def __init__(self, topic: str, offset: int, key: str, value: bytes) -> None:
        self._topic, self._offset, self._key, self._value = PREFIX + topic, offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key.encode()

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def _life(serde: Any, tenant: str, ticket_id: str) -> list[_Record]:
    """A ticket's records as the pipeline writes them: accepted, missed by the cache, routed to
    the agent, one agent step, resolved."""
    ticket = TicketSubmitted(ticket_id=ticket_id, tenant_id=tenant, body="my card was declined", created_at=1)
    step0 = AgentStep(step_id=f"{ticket_id}:0", ticket_id=ticket_id, tenant_id=tenant, workflow="agent.default",
                      step=0, ticket=b"", intent="declined_card_payment")
    step1 = AgentStep(step_id=f"{ticket_id}:1", ticket_id=ticket_id, tenant_id=tenant, workflow="agent.default",
                      step=1, ticket=b"", tokens_in=120, tokens_out=30, cost_micros=45)
    answer = TicketResolved(ticket_id=ticket_id, tenant_id=tenant, answer="Here is why.", path="agent",
                            created_at=1, resolved_at=2)
    out: list[_Record] = []
    for topic, event in (("tickets.accepted", ticket), ("tickets.uncached", ticket),
                         ("agent.steps.interactive", step0), ("agent.steps.interactive", step1),
                         ("tickets.responses", answer)):
        schema = type(event).SCHEMA
        value = serde.encode(schema, to_record(event), PREFIX + topic)
        out.append(_Record(topic, len(out), ticket_id, value))
    return out


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0.01))


def test_only_resolutions_are_decoded_until_someone_asks_for_the_progress() -> None:
    serde = make_serde(Settings())
    loop = asyncio.new_event_loop()
    recorded: list[Any] = []
    fan = FanOut(Settings(topic_prefix=PREFIX), serde, loop, recorded.extend)
    try:
        fan._handle(_life(serde, "acme", "T-1"))
        _drain(loop)
        assert fan.decoded == 1  # the resolution only
        assert [key for key, _ in recorded] == [("acme", "T-1")]
        resolved = fan.resolved(("acme", "T-1"))
        assert resolved is not None and resolved.data["answer"] == "Here is why."
        assert fan.decoded == 1  # reading the resolution decodes nothing more

        # a resumed event stream reads the history: every event, in the order of a ticket's life
        history = fan.history(("acme", "T-1"))
        assert [e.id for e in history] == [ACCEPTED, CACHE, ROUTED, AGENT + 1, RESOLVED]
        assert fan.decoded == 5
        assert history[3].data["cost_usd"] == 0.000045
        assert fan.history(("other-tenant", "T-1")) == []  # the tenant is inside the record
        assert fan.history(("acme", "T-1")) == history and fan.decoded == 5  # decoded once
    finally:
        loop.close()


def test_a_stream_that_listens_gets_progress_decoded_as_it_comes_and_a_waiter_only_the_answer() -> None:
    serde = make_serde(Settings())
    loop = asyncio.new_event_loop()
    fan = FanOut(Settings(topic_prefix=PREFIX), serde, loop, lambda resolved: None)
    try:
        stream = fan.listen(("acme", "T-2"))
        waiter = fan.listen(("acme", "T-3"), progress=False)
        fan._handle([*_life(serde, "acme", "T-2"), *_life(serde, "acme", "T-3")])
        _drain(loop)
        streamed = [stream.get_nowait().id for _ in range(stream.qsize())]
        assert streamed == [ACCEPTED, CACHE, ROUTED, AGENT + 1, RESOLVED]
        waited = [waiter.get_nowait().id for _ in range(waiter.qsize())]
        assert waited == [RESOLVED]
        assert fan.decoded == 5 + 1  # T-2's five records; T-3's resolution only
        fan.unlisten(("acme", "T-2"), stream)
        fan.unlisten(("acme", "T-3"), waiter, progress=False)
        assert fan.streamed == set()
    finally:
        loop.close()


def test_a_stream_that_starts_listening_while_its_records_are_on_their_way_misses_nothing() -> None:
    serde = make_serde(Settings())
    loop = asyncio.new_event_loop()
    fan = FanOut(Settings(topic_prefix=PREFIX), serde, loop, lambda resolved: None)
    try:
        fan._handle(_life(serde, "acme", "T-4")[:2])  # read before anyone listened
        stream = fan.listen(("acme", "T-4"))  # listening begins before the loop has stored them
        _drain(loop)
        got = [stream.get_nowait().id for _ in range(stream.qsize())]
        assert got == [ACCEPTED, CACHE]
        fan.unlisten(("acme", "T-4"), stream)
    finally:
        loop.close()


def test_undecoded_progress_is_bounded_in_bytes_oldest_tickets_first() -> None:
    serde = make_serde(Settings())
    loop = asyncio.new_event_loop()
    records = {ticket_id: _life(serde, "acme", ticket_id) for ticket_id in ("T-5", "T-6", "T-7")}
    per_ticket = sum(len(r.value()) for r in records["T-5"][:4])  # the four progress records
    fan = FanOut(Settings(topic_prefix=PREFIX), serde, loop, lambda resolved: None, keep_raw_bytes=2 * per_ticket)
    try:
        for ticket_id in ("T-5", "T-6", "T-7"):
            fan._handle(records[ticket_id])
        _drain(loop)
        assert list(fan.raw) == ["T-6", "T-7"] and fan.raw_bytes <= 2 * per_ticket
        assert [e.id for e in fan.history(("acme", "T-5"))] == [RESOLVED]  # its progress dropped, not its answer
        assert [e.id for e in fan.history(("acme", "T-7"))] == [ACCEPTED, CACHE, ROUTED, AGENT + 1, RESOLVED]
        assert list(fan.raw) == ["T-6"] and fan.raw_bytes == sum(len(r.value()) for r in records["T-6"][:4])
    finally:
        loop.close()
