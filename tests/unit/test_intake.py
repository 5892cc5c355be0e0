from __future__ import annotations

import re

import pytest

from pipeline.events import TicketSubmitted
from pipeline.processing import Emit, Failure
from processors.intake import Intake, IntakeLimits, normalise
from tests.fakes import FixedClock, MemoryIdempotencyStore


@pytest.fixture
def intake() -> Intake:
    return Intake(MemoryIdempotencyStore(), FixedClock(), IntakeLimits(max_body_bytes=64 * 1024))


def ticket(**overrides: object) -> TicketSubmitted:
    values: dict[str, object] = {"ticket_id": "t-1", "tenant_id": "acme", "body": "Where is my card?"}
    values.update(overrides)
    return TicketSubmitted(**values)  # type: ignore[arg-type]


def test_accepts_and_normalises(intake: Intake) -> None:
    outcome = intake.handle(ticket(body="  Where\r\n is   my\x00card?\n\n\n\nThanks "), "o1")
    assert isinstance(outcome, Emit)
    [output] = outcome.outputs
    accepted = output.event
    assert isinstance(accepted, TicketSubmitted)
    assert output.topic == "tickets.accepted" and output.key == "t-1"
    assert accepted.body == "Where\nis my card?\n\nThanks"
    assert accepted.created_at == FixedClock().now and accepted.stage_times == {"intake": FixedClock().now}


def test_cache_text_is_redacted_but_body_is_kept(intake: Intake) -> None:
    outcome = intake.handle(ticket(body="Card 4111 1111 1111 1111 was charged, mail jo@x.io"), "o1")
    assert isinstance(outcome, Emit)
    accepted = outcome.outputs[0].event
    assert isinstance(accepted, TicketSubmitted)
    assert accepted.cache_text == "Card <CARD> was charged, mail <EMAIL>"
    assert "4111" in accepted.body  # the agent and tools may need it; the cache may not


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"tenant_id": ""}, "tenant_id is missing"),
    ({"tenant_id": "a b"}, "tenant_id 'a b' must be"),
    ({"ticket_id": ""}, "ticket_id '' must be"),
    ({"ticket_id": "x" * 129}, "ticket_id .* must be 1-128"),
    ({"body": "x" * (64 * 1024 + 1)}, "body is 65537 bytes, over the limit of 65536"),
    ({"body": " \n\t "}, "body is empty after normalisation"),
    ({"subject": "s" * 2000}, "subject is over the limit"),
    ({"created_at": 5}, "created_at 5 is not a plausible"),
    ({"metadata": {str(i): "v" for i in range(40)}}, "metadata has 40 entries"),
])
def test_rejects_with_a_clear_reason(intake: Intake, overrides: dict[str, object], reason: str) -> None:
    outcome = intake.handle(ticket(**overrides), "o1")
    assert isinstance(outcome, Failure)
    assert not outcome.retryable and outcome.error_class == "InvalidTicket"

    assert re.search(reason, outcome.message), outcome.message


def test_duplicate_ticket_id_is_dropped_but_a_replay_of_the_same_record_is_not(intake: Intake) -> None:
    first = intake.handle(ticket(), "ingress/0/10")
    again = intake.handle(ticket(), "ingress/0/10")  # same record after a crash
    duplicate = intake.handle(ticket(), "ingress/0/11")  # submitted twice
    other_tenant = intake.handle(ticket(tenant_id="globex"), "ingress/0/12")
    replayed = intake.handle(ticket(replay_tag="backfill-1"), "ingress/0/13")
    assert isinstance(first, Emit) and len(first.outputs) == 1
    assert isinstance(again, Emit) and len(again.outputs) == 1
    assert isinstance(duplicate, Emit) and duplicate.outputs == () and duplicate.note == "duplicate"
    assert isinstance(other_tenant, Emit) and len(other_tenant.outputs) == 1
    assert isinstance(replayed, Emit) and len(replayed.outputs) == 1


def test_normalise() -> None:
    assert normalise("a\u0301  b") == "\u00e1 b"  # NFC
    assert normalise("\t x \r\n\r\n\r\n\r\n y ") == "x\n\ny"


def test_a_batch_is_claimed_in_one_round_trip() -> None:
    store = MemoryIdempotencyStore()
    intake = Intake(store, FixedClock(), IntakeLimits())
    batch = [(ticket(ticket_id=f"t-{i}"), f"o{i}") for i in range(5)]
    batch.append((ticket(ticket_id="t-0"), "o9"))  # same id again in the same batch
    batch.append((ticket(tenant_id=""), "o10"))  # invalid: must not be claimed
    outcomes = intake.handle_batch(batch)
    assert store.round_trips == 1
    assert [len(o.outputs) for o in outcomes[:6] if isinstance(o, Emit)] == [1, 1, 1, 1, 1, 0]
    assert isinstance(outcomes[6], Failure)
    assert "acme" in "".join(store.owners) and len(store.owners) == 5
