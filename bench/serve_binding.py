"""One processor run by ticketflow's runtime engine until SIGTERM: the benchmarks' stand-ins
(a pass-through against a peer, an echo pipeline behind the gateway) run on the real engine."""

from __future__ import annotations

import signal
import threading
import uuid

from pipeline.runtime.binding import Binding


def serve(binding: Binding, prefix: str) -> int:
    from prometheus_client import CollectorRegistry

    from pipeline.metrics import RuntimeMetrics
    from pipeline.runtime.engine import Engine
    from pipeline.runtime.worker import make_serde
    from pipeline.settings import load_settings

    settings = load_settings().model_copy(update={"topic_prefix": prefix})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Engine(binding, settings, make_serde(settings), f"{binding.name}-{uuid.uuid4().hex[:6]}",
           RuntimeMetrics(CollectorRegistry()), stop).run()
    return 0
