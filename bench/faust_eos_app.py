"""The faust-streaming side of bench/faust_eos_probe.py: a pass-through agent with
``processing_guarantee="exactly_once"``, the mode whose duplicates upstream issues report.

Run by the probe as ``python bench/faust_eos_app.py worker``; configured by PROBE_* variables.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import faust

PREFIX = os.environ.get("PROBE_PREFIX", "probe.")
app = faust.App(
    f"{PREFIX}faust-probe",
    broker=f"kafka://{os.environ.get('PROBE_BOOTSTRAP', '127.0.0.1:9092')}",
    processing_guarantee="exactly_once",
    store="memory://",
    topic_partitions=6,
    datadir=os.environ.get("PROBE_DATADIR", "/tmp/ticketflow-faust-probe"),
    web_enabled=False,
    broker_session_timeout=6.0,
)
source = app.topic(f"{PREFIX}in", key_serializer="raw", value_serializer="raw")
sink = app.topic(f"{PREFIX}out", key_serializer="raw", value_serializer="raw")


@app.agent(source)  # type: ignore[untyped-decorator]
async def forward(stream: Any) -> AsyncIterator[Any]:
    async for key, value in stream.items():
        await sink.send(key=key, value=value)
        yield key


if __name__ == "__main__":
    app.main()
