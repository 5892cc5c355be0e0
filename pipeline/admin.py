"""`ticketflow topics apply`: create missing topics of the catalog, report drift of others."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from pipeline.errors import ServiceError
from pipeline.settings import Settings
from topics.catalog import CATALOG, TopicSpec, topic_name


@dataclass
class TopicReport:
    topic: str
    action: str  # created, ok, drift
    drift: list[str] = field(default_factory=list)


def _partitions(spec: TopicSpec, settings: Settings) -> int:
    return spec.partitions or settings.topic_partitions


def apply_topics(settings: Settings, timeout_s: float = 30.0) -> list[TopicReport]:
    admin = AdminClient(settings.kafka_common())
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise ServiceError(f"cannot reach Kafka at {settings.bootstrap_servers()}: {exc}") from exc
    reports: list[TopicReport] = []
    to_create: list[tuple[TopicSpec, str]] = []
    for spec in CATALOG:
        name = topic_name(settings.topic_prefix, spec.name)
        if name in existing:
            reports.append(_check(admin, spec, name, len(existing[name].partitions), settings, timeout_s))
        else:
            to_create.append((spec, name))
    if to_create:
        futures = admin.create_topics(
            [NewTopic(name, _partitions(spec, settings), settings.topic_replication_factor,
                      config=spec.configs()) for spec, name in to_create],
            operation_timeout=timeout_s,
        )
        for (_, name), future in zip(to_create, futures.values(), strict=True):
            try:
                future.result()
                reports.append(TopicReport(name, "created"))
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a concurrent apply won
                    raise ServiceError(f"cannot create topic {name}: {exc}") from exc
                reports.append(TopicReport(name, "ok"))
    return reports


def _check(admin: AdminClient, spec: TopicSpec, name: str, partitions: int, settings: Settings,
           timeout_s: float) -> TopicReport:
    drift: list[str] = []
    wanted_partitions = _partitions(spec, settings)
    if partitions != wanted_partitions:
        drift.append(f"partitions {partitions}, catalog says {wanted_partitions}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    for key, wanted in spec.configs().items():
        actual = configs[key].value if key in configs else None
        if actual != wanted:
            drift.append(f"{key}={actual}, catalog says {wanted}")
    return TopicReport(name, "drift" if drift else "ok", drift)


def delete_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Delete every catalog topic under ``settings.topic_prefix`` that exists (tests, benchmarks)."""
    if not settings.topic_prefix:
        raise ServiceError("refusing to delete topics without a topic prefix")
    admin = AdminClient(settings.kafka_common())
    existing = admin.list_topics(timeout=timeout_s).topics
    names = [n for n in (topic_name(settings.topic_prefix, s.name) for s in CATALOG) if n in existing]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
            future.result()
    return names
