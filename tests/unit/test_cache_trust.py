"""Provenance, sensitive keys, the open-set second opinion, the audit and feedback."""

from __future__ import annotations

import numpy as np

from pipeline.cache.audit import AuditState, AuditTag, audit_share, audited_ticket, sampled, wilson
from pipeline.cache.calibrate import grouped_folds, paraphrase_groups, rows_needed
from pipeline.cache.index import Provenance, StoredEntry, confirmation_payload, neighbour_from_payload
from pipeline.cache.policy import (
    MAX_TIGHTENING,
    MISS_OPEN_SET,
    MISS_PROVISIONAL,
    MISS_ROUTER,
    HitPolicy,
    Neighbour,
    SecondOpinion,
    decide,
    tightened,
)
from pipeline.events import CacheFeedback, CacheUpdate, TicketResolved
from pipeline.processing import Emit
from processors.cache_audit import CacheAuditor
from processors.cache_feedback import CacheFeedbackApplier
from processors.cache_writer import CacheWriter
from tests.fakes import FixedClock, MemoryAuditLedger

KNOWN = frozenset({"card_arrival", "card_delivery_estimate", "lost_or_stolen_card", "activate_my_card"})


def n(similarity: float, key: str, trusted: bool = True, text: str = "some question") -> Neighbour:
    return Neighbour(similarity, key, text, f"answer for {key}", f"{key}-{similarity}-{trusted}", trusted)


def agreeing(key: str, trusted: bool = True, top: float = 0.88) -> list[Neighbour]:
    return [n(top - i * 0.005, key, trusted) for i in range(6)]


def test_a_hit_on_provisional_entries_alone_needs_a_near_paraphrase() -> None:
    assert decide(HitPolicy(), "q", agreeing("card_arrival", trusted=False)).reason == MISS_PROVISIONAL
    assert decide(HitPolicy(), "q", agreeing("card_arrival", trusted=False, top=0.95)).hit
    mixed = agreeing("card_arrival", trusted=False)
    mixed[3] = n(0.87, "card_arrival", trusted=True)
    assert decide(HitPolicy(), "q", mixed).hit  # one trusted entry of the key supports it


def test_a_sensitive_key_is_never_served_from_a_provisional_entry() -> None:
    provisional_top = [n(0.99, "lost_or_stolen_card", trusted=False), *agreeing("lost_or_stolen_card", top=0.9)]
    verdict = decide(HitPolicy(), "my card was stolen", provisional_top)
    assert not verdict.hit  # the provisional entry weighs against the key instead of for it
    alone = decide(HitPolicy(), "my card was stolen", [n(0.99, "lost_or_stolen_card", trusted=False)])
    assert not alone.hit and alone.reason == MISS_PROVISIONAL  # a near-duplicate, but provisional
    # provisional entries lend it no support either: two trusted ones are not enough at min_agree 3
    weak = [n(0.9, "lost_or_stolen_card"), n(0.89, "lost_or_stolen_card"),
            *[n(0.88, "lost_or_stolen_card", trusted=False)] * 5]
    assert not decide(HitPolicy(), "my card was stolen", weak).hit
    assert decide(HitPolicy(), "my card was stolen", agreeing("lost_or_stolen_card")).hit


def test_a_hit_that_contradicts_a_confident_router_is_a_miss() -> None:
    entries = agreeing("card_arrival")
    confident_other = SecondOpinion("card_delivery_estimate", ("card_delivery_estimate", "card_arrival"), KNOWN)
    assert decide(HitPolicy(), "q", entries, opinion=confident_other).reason == MISS_ROUTER
    agrees = SecondOpinion("card_arrival", ("card_arrival",), KNOWN, share=0.99, margin=0.1)
    assert decide(HitPolicy(), "q", entries, opinion=agrees).hit


def test_open_set_the_cache_agreeing_on_the_only_intent_it_holds_is_not_enough() -> None:
    # The cache holds only card_arrival; the classifier, which knows every intent, abstains and
    # puts card_delivery_estimate first: the query's intent is absent from the cache.
    entries = agreeing("card_arrival", top=0.93)
    absent = SecondOpinion(None, ("card_delivery_estimate", "card_arrival"), KNOWN, share=0.6, margin=0.01)
    assert decide(HitPolicy(), "how long until my card comes", entries, opinion=absent).reason == MISS_OPEN_SET
    # abstaining with the key first, but not a near-paraphrase
    unsure = SecondOpinion(None, ("card_arrival", "card_delivery_estimate"), KNOWN, share=0.96, margin=0.05)
    assert decide(HitPolicy(), "q", agreeing("card_arrival", top=0.85), opinion=unsure).reason == MISS_OPEN_SET
    assert decide(HitPolicy(), "q", entries, opinion=unsure).hit
    # a key the classifier does not know (the tenant's own intent) is judged by the cache alone
    own = agreeing("acme_returns_policy")
    assert decide(HitPolicy(), "q", own, opinion=SecondOpinion(None, ("card_arrival",), KNOWN, 0.5, 0.0)).hit


def test_tightening_raises_every_bar_and_level_three_serves_almost_nothing() -> None:
    base = HitPolicy()
    one, two, three = (tightened(base, level) for level in (1, 2, MAX_TIGHTENING))
    assert tightened(base, 0) == base
    assert one.margin > base.margin and one.min_agree > base.min_agree and one.provisional_similarity == 1.0
    assert two.min_similarity > one.min_similarity and three.min_similarity >= 0.99
    entries = agreeing("card_arrival", top=0.9)
    assert decide(base, "q", entries).hit and not decide(three, "q", entries).hit


def test_provenance_round_trips_through_the_index_payload() -> None:
    agent = StoredEntry("t-1:", "q", "a", "card_arrival", "1", 0, 10, Provenance("agent", "gpt-4.1-mini", 0.8))
    payload = agent.payload("acme")
    assert payload["trusted"] is False and payload["model_tier"] == "gpt-4.1-mini"
    assert neighbour_from_payload(0.9, payload).trusted is False
    assert neighbour_from_payload(0.9, {**payload, **confirmation_payload("audit")}).trusted is True
    legacy = {k: v for k, v in payload.items() if k not in ("trusted", "source")}
    assert neighbour_from_payload(0.9, legacy).trusted is False  # unknown provenance: provisional


def resolved(path: str = "agent", key: str = "card_arrival", tag: str | None = None, **more: object) -> TicketResolved:
    return TicketResolved(ticket_id="t-1", tenant_id="acme", answer="a", path=path,  # type: ignore[arg-type]
                          created_at=1, resolved_at=2, resolution_key=key, cacheable=True, cache_text="q",
                          replay_tag=tag, models=["gpt-4.1-nano", "gpt-4.1-mini"], **more)  # type: ignore[arg-type]


def test_the_writer_records_where_an_entry_came_from() -> None:
    writer = CacheWriter(FixedKbVersionsOne(), 60)
    out = writer.handle(resolved(confidence=0.83), "o")
    assert isinstance(out, Emit)
    update = out.outputs[0].event
    assert isinstance(update, CacheUpdate)
    assert (update.source, update.model_tier, update.confidence) == ("agent", "gpt-4.1-mini", 0.83)
    rule = writer.handle(resolved(path="rule"), "o")
    assert isinstance(rule, Emit) and rule.outputs[0].event.source == "rule"  # type: ignore[union-attr]


class FixedKbVersionsOne:
    def current(self, tenant: str) -> str:
        return "1"


def test_wilson_interval_and_the_rows_a_guarantee_needs() -> None:
    low, high = wilson(99, 100)
    assert 0.94 < low < 0.95 and 0.998 < high <= 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    assert rows_needed(0.995, 0.5, 0.99) is not None and rows_needed(0.99, 0.5, 0.99) is None
    assert audit_share(0.05, 10, 10, 0.05) == 0.2 and audit_share(0.05, 990, 1000, 0.05) == 0.05


def test_audit_sampling_is_deterministic_and_near_its_share() -> None:
    picked = [sampled(f"t-{i}", 0.05) for i in range(20_000)]
    assert picked == [sampled(f"t-{i}", 0.05) for i in range(20_000)]
    assert 0.04 < sum(picked) / len(picked) < 0.06
    tag = AuditTag("card_arrival", "t-9:", "t-9")
    assert AuditTag.parse(tag.render()) == tag and AuditTag.parse("backfill-1") is None
    assert audited_ticket("t-9#audit") == "t-9"


def test_paraphrases_stay_in_one_fold() -> None:
    vectors = np.eye(6, dtype=np.float32)
    vectors[1] = vectors[0]  # a paraphrase of row 0
    groups = paraphrase_groups(vectors)
    assert groups[0] == groups[1] and len(set(groups)) == 5
    folds = grouped_folds(groups, 3, seed=1)
    assert any({0, 1} <= set(f) for f in folds) and sorted(row for fold in folds for row in fold) == list(range(6))


def test_the_audit_confirms_agreeing_entries_and_tightens_a_wrong_tenant() -> None:
    ledger = MemoryAuditLedger()
    auditor = CacheAuditor(ledger, FixedClock(5), target=0.99)
    tag = AuditTag("card_arrival", "t-1:", "t-1").render()
    agreed = auditor.handle(resolved(path="rule", tag=tag), "o")
    assert isinstance(agreed, Emit)
    topics = {o.topic: o.event for o in agreed.outputs}
    assert topics["cache.updates"].op == "confirm"  # type: ignore[union-attr]
    assert topics["pipeline.metrics"].agreed is True  # type: ignore[union-attr]
    levels = []
    for i in range(40):  # a tenant whose entries for one intent are wrong
        wrong = AuditTag("card_arrival", f"seed:faq.csv:{i}", f"w-{i}").render()
        out = auditor.handle(dataclass_replace(resolved(path="agent", key="lost_or_stolen_card", tag=wrong),
                                               ticket_id=f"w-{i}#audit"), "o")
        assert isinstance(out, Emit)
        levels.append(out.outputs[0].event.policy_level)  # type: ignore[union-attr]
    assert levels[0] == 0 and max(levels) >= 1 and levels.index(1) < 15  # within a bounded number of audits
    assert ledger.history and "below the target" in str(ledger.history[0])
    # counted once: a redelivered audit changes nothing
    again = auditor.handle(dataclass_replace(resolved(path="agent", key="x", tag=wrong), ticket_id="w-39#audit"), "o")
    assert isinstance(again, Emit) and again.outputs[0].event.audited == 41  # type: ignore[union-attr]
    escalated = auditor.handle(resolved(path="escalated", key="", tag=tag), "o")
    assert isinstance(escalated, Emit) and not escalated.outputs


def dataclass_replace(event: TicketResolved, **changes: object) -> TicketResolved:
    import dataclasses

    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


def test_feedback_confirms_or_deletes_the_entry_behind_an_answer() -> None:
    applier = CacheFeedbackApplier(FixedClock(7))
    hit = applier.handle(CacheFeedback("t-1", "acme", "reject", 1, cache_entry_id="t-0:"), "o")
    own = applier.handle(CacheFeedback("t-2", "acme", "confirm", 1), "o")
    assert isinstance(hit, Emit) and isinstance(own, Emit)
    assert (hit.outputs[0].event.op, hit.outputs[0].event.entry_id) == ("delete", "t-0:")  # type: ignore[union-attr]
    assert (own.outputs[0].event.op, own.outputs[0].event.entry_id,  # type: ignore[union-attr]
            own.outputs[0].event.source) == ("confirm", "t-2:", "human")  # type: ignore[union-attr]


def test_audit_state_does_not_tighten_on_little_evidence() -> None:
    assert not AuditState(5, 0).should_tighten(0.99, MAX_TIGHTENING)
    assert AuditState(20, 10).should_tighten(0.99, MAX_TIGHTENING)
    assert not AuditState(20, 10, level=MAX_TIGHTENING).should_tighten(0.99, MAX_TIGHTENING)
