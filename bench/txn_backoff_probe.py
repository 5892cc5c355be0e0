"""Why back-to-back transactions were slow: the time and broker CPU of one transaction.

One transactional producer commits transactions of five records and a consumer offset in a
loop for a few seconds, in four ways: the offsets sent right after producing (what the
runtime did) or after the outputs are flushed (what it does now), each with librdkafka's
default ``retry.backoff.ms`` (100) and with 20 ms, back to back and with a 25 ms pause
between transactions (the runtime's commit interval). Prints transactions per second, the
mean and max time of one, and the broker's CPU per transaction (from /proc; it includes the
broker's idle work, about 9 % of a core here, hence more per transaction with pauses).

A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS on AddOffsetsToTxn
until the broker has written the last one's markers; librdkafka then waits retry.backoff.ms.

    ./run ticketflow services up
    PYTHONPATH=. .venv/bin/python bench/txn_backoff_probe.py
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.procstat import cpu_seconds
from pipeline.settings import load_settings


def broker_pid() -> int | None:
    found = subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def probe(bootstrap: str, flush_first: bool, backoff_ms: int, gap_s: float, seconds: float) -> str:
    topic = f"txb-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"txb-{topic}", "linger.ms": 2,
                         "retry.backoff.ms": backoff_ms})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    for _ in range(20):
        consumer.poll(0.2)
    producer.init_transactions()
    metadata = consumer.consumer_group_metadata()
    pid = broker_pid()
    broker_before = cpu_seconds(pid) if pid else 0.0
    n, total, worst, start = 0, 0.0, 0.0, time.time()
    while time.time() - start < seconds:
        if gap_s:
            time.sleep(gap_s)
        began = time.perf_counter()
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, key=str(i).encode(), value=b"x" * 300)
        if flush_first:
            producer.flush(10)
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, n)], metadata, 10)
        producer.commit_transaction(10)
        took = time.perf_counter() - began
        total, worst, n = total + took, max(worst, took), n + 1
    elapsed = time.time() - start
    broker = f"{1000 * (cpu_seconds(pid) - broker_before) / n:.2f} ms" if pid else "n/a"
    consumer.close()
    admin.delete_topics([topic])
    return (f"{'flushed first' if flush_first else 'offsets first':13s} backoff {backoff_ms:3d} ms "
            f"gap {1000 * gap_s:2.0f} ms: {n / elapsed:5.0f} tx/s, mean {1000 * total / n:6.2f} ms, "
            f"max {1000 * worst:6.1f} ms, broker CPU {broker} a transaction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    bootstrap = load_settings().kafka_bootstrap_servers or "127.0.0.1:9092"
    for gap_s in (0.0, 0.025):
        for flush_first in (False, True):
            for backoff_ms in (100, 20):
                print(probe(bootstrap, flush_first, backoff_ms, gap_s, args.seconds), flush=True)


if __name__ == "__main__":
    main()
