"""How long ``begin_transaction`` holds the GIL: begun at the next commit or right after the last.

confluent-kafka's ``Producer.begin_transaction`` waits for librdkafka's main thread to handle
the request without releasing the GIL, so every other thread of a worker stops meanwhile
(py-spy ``--gil`` on a worker at 100 tickets/s: 9.9 % of the samples that held the GIL). One
transactional producer commits transactions of five records and a consumer offset with a
25 ms pause between them (the runtime's commit interval), the next transaction begun either
after the pause ("late", what the runtime did) or right after the commit ("early", what it
does now: ``Transactions._begin_ahead``); prints the call's time (the GIL held) per way.
``--hog`` runs two busy processes beside it (a machine whose cores are full). ``--idle-check``
first begins a transaction, leaves it idle longer than its ``transaction.timeout.ms`` and then
commits a record in it (a transaction begun ahead may wait that long for its first record).

    ./run ticketflow services up
    PYTHONPATH=. .venv/bin/python bench/txn_begin_probe.py [--hog]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.settings import load_settings


def probe(bootstrap: str, early: bool, seconds: float, gap_s: float) -> str:
    topic = f"txbegin-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"txbegin-{topic}", "linger.ms": 2,
                         "retry.backoff.ms": 20})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False})
    consumer.subscribe([topic])
    for _ in range(10):
        consumer.poll(0.2)
    producer.init_transactions()
    metadata = consumer.consumer_group_metadata()
    begins: list[float] = []

    def begin() -> None:
        started = time.perf_counter()
        producer.begin_transaction()
        begins.append(1000 * (time.perf_counter() - started))

    n, start = 0, time.time()
    if early:
        begin()
    while time.time() - start < seconds:
        time.sleep(gap_s)
        if not early:
            begin()
        for i in range(5):
            producer.produce(topic, key=str(i).encode(), value=b"x" * 300)
        producer.flush(10)
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, n)], metadata, 10)
        producer.commit_transaction(10)
        n += 1
        if early:
            begin()
    if early:
        producer.abort_transaction(10)
    consumer.close()
    admin.delete_topics([topic])
    b = sorted(begins)
    return (f"{'early' if early else 'late':5s}: {len(b)} begins, mean {statistics.mean(b):.3f} ms, "
            f"p50 {b[len(b) // 2]:.3f}, p99 {b[int(len(b) * 0.99)]:.3f}, max {b[-1]:.2f} ms")


def idle_check(bootstrap: str, timeout_ms: int = 3000, idle_s: float = 8.0) -> str:
    topic = f"txidle-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic,
                         "transaction.timeout.ms": timeout_ms})
    producer.init_transactions()
    producer.begin_transaction()
    time.sleep(idle_s)
    producer.produce(topic, b"after the idle time")
    producer.flush(10)
    producer.commit_transaction(10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    message = consumer.poll(10)
    consumer.close()
    admin.delete_topics([topic])
    read = message.value() if message is not None and message.error() is None else None
    return (f"idle check: begun, idle {idle_s:g} s against transaction.timeout.ms {timeout_ms}, then committed; "
            f"read back committed: {read!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hog", action="store_true", help="two busy processes beside it")
    parser.add_argument("--idle-check", action="store_true", help="an idle begun transaction still commits")
    args = parser.parse_args()
    bootstrap = load_settings().kafka_bootstrap_servers or "127.0.0.1:9092"
    if args.idle_check:
        print(idle_check(bootstrap), flush=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if args.hog else 0)]
    try:
        for _ in range(args.rounds):
            for early in (False, True):
                print(probe(bootstrap, early, args.seconds, 0.025), flush=True)
    finally:
        for hog in hogs:
            hog.kill()


if __name__ == "__main__":
    main()
