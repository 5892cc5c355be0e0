"""Avro wire formats for every event, and JSON input validated against the same schema.

Two binary framings:

* Avro single-object encoding (the Avro spec): ``C3 01``, the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the body.
  Used when no Schema Registry is configured; the fingerprint finds the writer schema
  among every version in ``schemas/avro``.
* Confluent framing: ``00``, a 4-byte big-endian schema id, then the body; used when
  ``TICKETFLOW_SCHEMA_REGISTRY_URL`` is set (ids from confluent-kafka's registry client).

Decoding accepts either framing (and JSON where allowed), so a topic can move from one to
the other without a flag day. fastavro does the Avro work: it is several times faster than
the reference ``avro`` package, which we keep for its schema-compatibility checker.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from pipeline.errors import DecodeError, SchemaError
from schemas import schema_files, version_of

if TYPE_CHECKING:
    from pipeline.events import E

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_CONFLUENT_HEADER = struct.Struct(">bI")


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event's schema."""

    name: str
    version: int
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the canonical form
    canonical: str


@dataclass
class SchemaCatalog:
    """Every version of every event schema, by name and by fingerprint."""

    by_name: dict[str, list[SchemaVersion]] = field(default_factory=dict)
    by_fingerprint: dict[bytes, SchemaVersion] = field(default_factory=dict)

    @classmethod
    def load(cls, files: list[Path] | None = None) -> SchemaCatalog:
        catalog = cls()
        for path in files if files is not None else schema_files():
            try:
                raw = json.loads(path.read_text())
                parsed = fastavro.parse_schema(raw, named_schemas={})
            except (ValueError, fastavro.schema.SchemaParseException) as exc:
                raise SchemaError(f"{path.name}: not a valid Avro schema: {exc}") from exc
            canonical = to_parsing_canonical_form(parsed)
            version = SchemaVersion(
                name=raw["name"],
                version=version_of(path),
                raw=raw,
                parsed=parsed,
                fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
                canonical=canonical,
            )
            catalog.by_name.setdefault(version.name, []).append(version)
            catalog.by_fingerprint[version.fingerprint] = version
        for versions in catalog.by_name.values():
            versions.sort(key=lambda v: v.version)
        return catalog

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self.by_name[name][-1]
        except KeyError as exc:
            raise SchemaError(f"no schema named {name!r}") from exc


class SchemaIdRegistry(Protocol):
    """The part of a Schema Registry the Confluent framing needs."""

    def id_for(self, subject: str, schema: SchemaVersion) -> int: ...

    def schema_for(self, schema_id: int) -> dict[str, Any]: ...


class ConfluentSchemaRegistry:
    """Schema ids from a Confluent-compatible Schema Registry (confluent-kafka's client)."""

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._ids: dict[tuple[str, bytes], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def id_for(self, subject: str, schema: SchemaVersion) -> int:
        from confluent_kafka.schema_registry import Schema

        key = (subject, schema.fingerprint)
        if key not in self._ids:
            self._ids[key] = self._client.register_schema(
                subject, Schema(json.dumps(schema.raw), "AVRO")
            )
        return self._ids[key]

    def schema_for(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._schemas:
            fetched = self._client.get_schema(schema_id)
            self._schemas[schema_id] = json.loads(fetched.schema_str or "{}")
        return self._schemas[schema_id]


class AvroSerde:
    """Encode and decode events; ``name`` is the record name, e.g. ``TicketSubmitted``."""

    def __init__(self, catalog: SchemaCatalog, registry: SchemaIdRegistry | None = None) -> None:
        self.catalog = catalog
        self.registry = registry
        self._registry_schemas: dict[int, Any] = {}

    def encode(self, name: str, record: dict[str, Any], topic: str = "") -> bytes:
        schema = self.catalog.latest(name)
        buf = io.BytesIO()
        if self.registry is not None:
            schema_id = self.registry.id_for(f"{topic}-value", schema)
            buf.write(_CONFLUENT_HEADER.pack(0, schema_id))
        else:
            buf.write(SINGLE_OBJECT_MAGIC)
            buf.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"cannot encode {name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, name: str, data: bytes, *, allow_json: bool = False) -> dict[str, Any]:
        """Decode bytes written with any known version of ``name``'s schema (or JSON)."""
        reader = self.catalog.latest(name)
        if data.startswith(SINGLE_OBJECT_MAGIC) and len(data) >= 10:
            writer_version = self.catalog.by_fingerprint.get(data[2:10])
            if writer_version is None:
                raise DecodeError(
                    f"unknown schema fingerprint {data[2:10].hex()} (not a {name} version we know)"
                )
            if writer_version.name != name:
                raise DecodeError(f"expected a {name} record, got a {writer_version.name}")
            return _read_body(data, 10, writer_version.parsed, reader.parsed, name)
        if data.startswith(CONFLUENT_MAGIC) and len(data) >= 5:
            if self.registry is None:
                raise DecodeError("Confluent-framed record but no schema registry is configured")
            _, schema_id = _CONFLUENT_HEADER.unpack_from(data)
            writer = self._registry_schema(schema_id)
            return _read_body(data, 5, writer, reader.parsed, name)
        if allow_json and data.lstrip()[:1] == b"{":
            return self.from_json(name, data)
        raise DecodeError(
            "not an Avro record (no single-object or Confluent header)"
            + (" and not a JSON object" if allow_json else "")
        )

    @staticmethod
    def to_json(record: dict[str, Any]) -> bytes:
        """A record as one line of UTF-8 JSON (``from_json`` reads it back)."""
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode()

    def from_json(self, name: str, data: bytes) -> dict[str, Any]:
        """Parse a JSON object and validate it against the latest schema, filling defaults."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DecodeError(f"JSON input is not valid UTF-8: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise DecodeError(f"JSON input must be an object, got {type(obj).__name__}")
        schema = self.catalog.latest(name)
        record = _with_defaults(obj, schema.raw)
        try:
            validate(record, schema.parsed, raise_errors=True)
        except ValidationError as exc:
            problems = "; ".join(_describe(err) for err in exc.errors)
            raise DecodeError(f"JSON does not match {name}: {problems}") from exc
        return record

    def _registry_schema(self, schema_id: int) -> Any:
        assert self.registry is not None
        if schema_id not in self._registry_schemas:
            try:
                raw = self.registry.schema_for(schema_id)
            except Exception as exc:  # the registry client raises its own error types
                raise DecodeError(f"schema id {schema_id} not found in registry: {exc}") from exc
            self._registry_schemas[schema_id] = fastavro.parse_schema(raw, named_schemas={})
        return self._registry_schemas[schema_id]


def _read_body(data: bytes, offset: int, writer: Any, reader: Any, name: str) -> dict[str, Any]:
    stream = io.BytesIO(data)
    stream.seek(offset)
    try:
        record = fastavro.schemaless_reader(stream, writer, reader)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name} has a string field that is not valid UTF-8: {exc}") from exc
    except (EOFError, ValueError, IndexError, TypeError, struct.error) as exc:
        raise DecodeError(
            f"{name} body is truncated or corrupt: {type(exc).__name__} {exc}".rstrip()
        ) from exc
    if stream.tell() != len(data):
        raise DecodeError(f"{name} has {len(data) - stream.tell()} trailing bytes after the record")
    if not isinstance(record, dict):
        raise DecodeError(f"{name} did not decode to a record")
    return record


def _with_defaults(obj: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    known = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise DecodeError(f"unknown field(s) {', '.join(unknown)}")
    record = dict(obj)
    missing = []
    for fld in schema["fields"]:
        if fld["name"] not in record:
            if "default" in fld:
                record[fld["name"]] = fld["default"]
            else:
                missing.append(fld["name"])
    if missing:
        raise DecodeError(f"missing required field(s) {', '.join(missing)}")
    return record


def _describe(err: Any) -> str:
    field_name = str(getattr(err, "field", "?")).rsplit(".", 1)[-1]
    datum = getattr(err, "datum", None)
    expected = getattr(err, "schema", "?")
    if isinstance(expected, dict):
        symbols = expected.get("symbols")
        expected = f"one of {symbols}" if symbols else expected.get("type", expected)
    shown = repr(datum) if len(repr(datum)) <= 40 else repr(datum)[:37] + "..."
    return f"field {field_name!r} is {shown} ({type(datum).__name__}), expected {expected}"


_NESTED: AvroSerde | None = None


def pack(event: Any) -> bytes:
    """An event as single-object Avro bytes, for state carried inside another event
    (the ticket inside an AgentStep or a ToolCall). Never registry-framed: the bytes stay
    readable wherever the outer event goes."""
    from pipeline.events import to_record

    global _NESTED
    if _NESTED is None:
        _NESTED = AvroSerde(SchemaCatalog.load())
    return _NESTED.encode(type(event).SCHEMA, to_record(event))


def unpack(data: bytes, event_type: type[E]) -> E:
    """The event of ``event_type`` that :func:`pack` wrote (any known schema version)."""
    global _NESTED
    if _NESTED is None:
        _NESTED = AvroSerde(SchemaCatalog.load())
    record = _NESTED.decode(event_type.SCHEMA, data)
    event: E = event_type.from_record(record)
    return event


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
