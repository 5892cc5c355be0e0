"""`ticketflow topics apply`: create missing topics of the catalog, report drift of others."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from pipeline.errors import ServiceError
from pipeline.faults import classify
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
        raise classify(exc, "kafka") if exc.args and exc.args[0].retriable() else ServiceError(
            f"cannot reach Kafka at {settings.bootstrap_servers()}: {exc}") from exc
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
                    raise classify(exc, "kafka") if exc.args[0].retriable() else ServiceError(
                        f"cannot create topic {name}: {exc}") from exc
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


def wait_for_readers(settings: Settings, topic: str, written: dict[int, int], group_prefix: str,
                     timeout_s: float = 120.0) -> int:
    """Wait until every active consumer group whose id starts with ``group_prefix`` has
    committed past ``written`` ({partition: last offset}) on catalog topic ``topic``;
    returns how many groups that was. Used to know that every cache replica applied an update."""
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

    admin = AdminClient(settings.kafka_common())
    physical = f"{settings.topic_prefix}{topic}"
    prefix = f"{settings.topic_prefix}{group_prefix}"
    deadline = time.monotonic() + timeout_s
    while True:
        listed = admin.list_consumer_groups(request_timeout=10).result()
        ids = [g.group_id for g in listed.valid if g.group_id.startswith(prefix)]
        active = []
        if ids:
            for group_id, future in admin.describe_consumer_groups(ids, request_timeout=10).items():
                description = future.result()
                if description.state == ConsumerGroupState.STABLE and description.members:
                    active.append(group_id)
        behind = []
        for group_id in active:
            request = [ConsumerGroupTopicPartitions(group_id, [TopicPartition(physical, p) for p in written])]
            [future] = admin.list_consumer_group_offsets(request, request_timeout=10).values()
            committed = {tp.partition: tp.offset for tp in future.result().topic_partitions}
            if any(committed.get(p, -1) <= offset for p, offset in written.items()):
                behind.append(group_id)
        if active and not behind:
            return len(active)
        if time.monotonic() > deadline:
            raise ServiceError(f"consumers {', '.join(behind) or '(none active)'} of {physical} did not read "
                               f"past {written} within {timeout_s:.0f} s")
        time.sleep(0.2)
