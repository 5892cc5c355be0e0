"""Reading a whole topic from the beginning, outside any consumer group's committed offsets.

Used by the client (responses, dead letters), the tests and the benchmarks. Tracks which
partitions are at their end, so a reader can stop once it has seen everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.errors import ServiceError


class TopicReader:
    """All partitions of ``topic`` from offset 0 (or from the first record at or after
    ``since_ms``, found per partition with ``offsets_for_times``); ``isolation`` is
    read_committed by default."""

    def __init__(self, conf: dict[str, Any], topic: str, isolation: str = "read_committed",
                 since_ms: int | None = None) -> None:
        self.consumer = Consumer({
            **conf,
            "group.id": f"ticketflow-reader-{uuid.uuid4()}",  # never commits: any id will do
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        })
        try:
            metadata = self.consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            self.consumer.close()
            raise ServiceError(f"cannot reach Kafka: {exc}") from exc
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        if not partitions:
            self.consumer.close()
            raise ServiceError(f"topic {topic} does not exist; run `ticketflow topics apply`")
        self.partitions = len(partitions)
        self._at_end: set[int] = set()
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        if since_ms is not None:  # -1 (nothing at or after since_ms) is OFFSET_END: an empty read
            starts = self.consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions],
                                                     timeout=10)
        self.consumer.assign(starts)

    @property
    def at_end(self) -> bool:
        """Every partition has been read to its end (as of the last poll)."""
        return len(self._at_end) == self.partitions

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """The records that arrive within ``timeout_s`` (errors and end markers filtered out)."""
        records = []
        for message in self.consumer.consume(num_messages=max_records, timeout=timeout_s):
            error = message.error()
            partition = message.partition() or 0
            if error is None:
                self._at_end.discard(partition)
                records.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                self._at_end.add(partition)
        return records

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_to_end(conf: dict[str, Any], topic: str, isolation: str = "read_committed",
                since_ms: int | None = None) -> Iterator[Message]:
    """Every record of ``topic`` (since ``since_ms``) as a reader with ``isolation`` sees it, then stop."""
    with TopicReader(conf, topic, isolation, since_ms) as reader:
        while not reader.at_end:
            yield from reader.poll(timeout_s=1.0)
