"""Quix Streams' side of bench/passthrough_peer_bench.py: consume ``tickets.ingress``, decode
each record with ticketflow's own Avro serde, produce it again to ``bench.passthrough.out``,
with Quix's exactly-once (Kafka transactions). Runs in its own virtual environment
(.venv-quix): quixstreams pins a confluent-kafka older than ticketflow's.

    .venv-quix/bin/python bench/quix_passthrough_app.py PREFIX BOOTSTRAP N
"""

from __future__ import annotations

import sys
import time

from quixstreams import Application

from pipeline.serde import AvroSerde, SchemaCatalog


def main() -> int:
    prefix, bootstrap, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    serde = AvroSerde(SchemaCatalog.load())
    app = Application(broker_address=bootstrap, consumer_group=f"{prefix}quix-passthrough",
                      auto_offset_reset="earliest", processing_guarantee="exactly-once",
                      commit_interval=0.1, loglevel="WARNING")
    source = app.topic(f"{prefix}tickets.ingress", value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(f"{prefix}bench.passthrough.out", value_serializer="bytes", key_serializer="bytes")
    seen = [0]

    def passthrough(value: bytes) -> bytes:
        record = serde.decode("TicketSubmitted", value, allow_json=True)
        seen[0] += 1
        if seen[0] >= expected:
            app.stop()
        return serde.encode("TicketSubmitted", record)

    app.dataframe(source).apply(passthrough).to_topic(sink)
    started = time.time()
    app.run()
    print(f"quix: {seen[0]} records in {time.time() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
