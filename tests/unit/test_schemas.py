"""Contract tests: every schema parses, events round-trip, versions stay backward compatible."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse as avro_parse

from pipeline.errors import DecodeError
from pipeline.events import (
    AgentStep,
    DeadLetter,
    Message,
    TicketResolved,
    TicketSubmitted,
    ToolCall,
    ToolInvalidation,
    ToolResult,
    UsageRecord,
    to_record,
)
from pipeline.serde import SINGLE_OBJECT_MAGIC, AvroSerde, SchemaCatalog, pack, unpack
from schemas import schema_files

ARCHITECTURE_EVENTS = {"TicketSubmitted", "TicketResolved", "UsageRecord", "DeadLetter",
                       "AgentStep", "ToolCall", "ToolResult", "CostSummary"}


def backward_compatible(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Can a reader with ``new`` read data written with ``old``? (the avro package's checker)"""
    result = ReaderWriterCompatibilityChecker().get_compatibility(  # type: ignore[no-untyped-call]
        avro_parse(json.dumps(new)), avro_parse(json.dumps(old)))
    return bool(result.compatibility is SchemaCompatibilityType.compatible)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde(SchemaCatalog.load())


# Events the issues added beside the architecture's (README: "Topics and events added").
EXTENSION_EVENTS = {"CacheUpdate", "ToolInvalidation", "CacheFeedback", "CacheAudit"}


def test_every_event_of_the_architecture_has_a_schema() -> None:
    assert set(SchemaCatalog.load().by_name) == ARCHITECTURE_EVENTS | EXTENSION_EVENTS


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: p.name)
def test_schema_parses_with_both_libraries(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert avro_parse(json.dumps(raw)).name == raw["name"]  # type: ignore[attr-defined]
    assert SchemaCatalog.load([path]).latest(raw["name"]).fingerprint


def test_each_version_reads_data_of_the_previous_one() -> None:
    catalog = SchemaCatalog.load()
    pairs = [(older, newer) for versions in catalog.by_name.values()
             for older, newer in itertools.pairwise(versions)]
    for older, newer in pairs:
        assert backward_compatible(newer.raw, older.raw), f"{newer.name} v{newer.version} breaks v{older.version}"
    # Versions must be numbered 1..n without gaps, so that "previous" is well defined.
    for versions in catalog.by_name.values():
        assert [v.version for v in versions] == list(range(1, len(versions) + 1))


def test_checker_rejects_breaking_changes() -> None:
    old = json.loads(next(p for p in schema_files() if p.name.startswith("ticket_submitted")).read_text())
    added_required = {**old, "fields": [*old["fields"], {"name": "sla", "type": "int"}]}
    added_optional = {**old, "fields": [*old["fields"], {"name": "sla", "type": ["null", "int"], "default": None}]}
    retyped = {**old, "fields": [{**f, "type": "int"} if f["name"] == "body" else f for f in old["fields"]]}
    assert backward_compatible(added_optional, old)
    assert not backward_compatible(added_required, old)
    assert not backward_compatible(retyped, old)


def test_ticket_submitted_round_trip(serde: AvroSerde) -> None:
    ticket = TicketSubmitted(ticket_id="t-1", tenant_id="acme", body="Where is my card? ünïcode",
                             customer_id="c-9", lane="batch", metadata={"label": "card_arrival"},
                             created_at=1_700_000_000_000, stage_times={"intake": 1_700_000_000_005})
    data = serde.encode("TicketSubmitted", to_record(ticket))
    assert data.startswith(SINGLE_OBJECT_MAGIC)
    assert data[2:10] == serde.catalog.latest("TicketSubmitted").fingerprint
    assert TicketSubmitted.from_record(serde.decode("TicketSubmitted", data)) == ticket


def test_resolved_and_dead_letter_round_trip(serde: AvroSerde) -> None:
    resolved = TicketResolved(ticket_id="t", tenant_id="a", answer="hi", path="escalated",
                              created_at=1, resolved_at=2, escalation_reason="no_route",
                              stage_latency_ms={"intake": 1.5}, models=["m"], cost_micros=12)
    letter = DeadLetter(source_topic="x", source_partition=1, source_offset=2, processor="intake",
                        error_class="DecodeError", error_message="bad", failed_at=3,
                        key=b"k", value=b"\xff\x00raw", headers={"h": b"v"})
    for event in (resolved, letter):
        data = serde.encode(type(event).SCHEMA, to_record(event))
        assert type(event).from_record(serde.decode(type(event).SCHEMA, data)) == event


def test_workflow_events_round_trip_with_nested_state(serde: AvroSerde) -> None:
    ticket = TicketSubmitted(ticket_id="t", tenant_id="a", body="lost my card", created_at=5)
    step = AgentStep(step_id="t:0", ticket_id="t", tenant_id="a", workflow="lost_or_stolen_card", step=0,
                     ticket=pack(ticket), model_tier="strong", allowed_tools=["card_status", "freeze_card"],
                     transcript=[Message("system", "facts"), Message("assistant", "", tool_call_id="c1",
                                                                      tool_name="card_status",
                                                                      tool_arguments='{"customer_id": "C-00001"}')],
                     budget_profile="urgent", reservation_micros=900, models=["cheap"], stage_times={"router": 4})
    call = ToolCall(call_id="t:0:card_status", ticket_id="t", tenant_id="a", tool="card_status",
                    arguments='{"customer_id": "C-00001"}', route="lost_or_stolen_card", reply_to="agent",
                    requested_at=6, step=pack(step))
    result = ToolResult(call_id=call.call_id, ticket_id="t", tenant_id="a", tool="card_status", ok=False,
                        reply_to="agent", completed_at=7, error_class="CircuitOpen", route=call.route, attempts=0,
                        step=call.step)
    usage = UsageRecord(record_id="t:0:card_status:tool", tenant_id="a", workflow="w", step="s", kind="tool",
                        provider="tools", model="card_status", occurred_at=8, ticket_id="t", latency_ms=1.5,
                        outcome="CircuitOpen")
    invalidation = ToolInvalidation(tenant_id="a", data_source="cards", created_at=9, reason="freeze_card t:1")
    for event in (step, call, result, usage, invalidation):
        data = serde.encode(type(event).SCHEMA, to_record(event))
        assert type(event).from_record(serde.decode(type(event).SCHEMA, data)) == event
    assert call.step is not None and unpack(unpack(call.step, AgentStep).ticket, TicketSubmitted) == ticket


def test_decode_rejects_other_event_types_and_garbage(serde: AvroSerde) -> None:
    resolved = TicketResolved(ticket_id="t", tenant_id="a", answer="hi", path="cache",
                              created_at=1, resolved_at=2)
    data = serde.encode("TicketResolved", to_record(resolved))
    with pytest.raises(DecodeError, match="expected a TicketSubmitted"):
        serde.decode("TicketSubmitted", data)
    with pytest.raises(DecodeError, match="not an Avro record"):
        serde.decode("TicketSubmitted", b"\x07garbage")
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        serde.decode("TicketSubmitted", SINGLE_OBJECT_MAGIC + b"\x01" * 8 + b"\x00")
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        serde.decode("TicketResolved", data[:-4])


def test_json_is_validated_against_the_same_schema(serde: AvroSerde) -> None:
    ok = serde.decode("TicketSubmitted", b'{"ticket_id": "t", "tenant_id": "a", "body": "hi"}', allow_json=True)
    assert ok["lane"] == "interactive" and ok["metadata"] == {}
    cases = {
        b'{"ticket_id": "t", "body": "hi"}': "missing required field\\(s\\) tenant_id",
        b'{"ticket_id": "t", "tenant_id": "a", "body": 42}': "field 'body' is 42 \\(int\\), expected string",
        b'{"ticket_id": "t", "tenant_id": "a", "body": "x", "lane": "fast"}': "field 'lane'.*one of",
        b'{"ticket_id": "t", "tenant_id": "a", "body": "x", "extra": 1}': "unknown field\\(s\\) extra",
        b'{"ticket_id": "t", "tenant_id": "a", "body": "\xff"}': "not valid UTF-8",
        b'{"ticket_id": ': "invalid JSON",
    }
    for data, reason in cases.items():
        with pytest.raises(DecodeError, match=reason):
            serde.decode("TicketSubmitted", data, allow_json=True)
    with pytest.raises(DecodeError, match="not an Avro record"):
        serde.decode("TicketSubmitted", b'{"ticket_id": "t"}')  # JSON only where allowed


def test_confluent_framing_with_a_schema_registry() -> None:
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

    from pipeline.serde import ConfluentSchemaRegistry

    registry = ConfluentSchemaRegistry.__new__(ConfluentSchemaRegistry)
    registry._client = MockSchemaRegistryClient({"url": "mock://ticketflow"})
    registry._ids, registry._schemas = {}, {}
    catalog = SchemaCatalog.load()
    framed = AvroSerde(catalog, registry)
    ticket = TicketSubmitted(ticket_id="t", tenant_id="a", body="hello")
    data = framed.encode("TicketSubmitted", to_record(ticket), "tickets.ingress")
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") >= 1
    assert TicketSubmitted.from_record(framed.decode("TicketSubmitted", data)) == ticket
    # A reader without a registry still reads single-object records, and says why it cannot
    # read Confluent-framed ones.
    plain = AvroSerde(catalog)
    with pytest.raises(DecodeError, match="no schema registry"):
        plain.decode("TicketSubmitted", data)
    assert framed.decode("TicketSubmitted", plain.encode("TicketSubmitted", to_record(ticket)))["body"] == "hello"


def test_what_json_readers_get_of_an_answer_leaves_the_caches_vector_behind() -> None:
    import json

    from pipeline.events import TicketResolved, to_record

    answer = TicketResolved(ticket_id="t", tenant_id="a", answer="x", path="rule", created_at=1, resolved_at=2,
                            embedding=b"\x00" * 1536, embedding_model="m")
    shown = json.loads(json.dumps(to_record(answer.for_readers())))
    assert shown["embedding"] is None and shown["embedding_model"] is None and shown["answer"] == "x"
