"""How one processor is bound to the stream: its inputs, how to decode them, its handler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pipeline.events import Event
from pipeline.processing import Outcome


@dataclass(frozen=True)
class Binding:
    """A processor as the runtime sees it.

    ``name`` names the consumer group (one group per processor); ``inputs`` are catalog
    topic names; records decode with ``input_schema`` (JSON too when ``allow_json``), become
    events with ``from_record`` and go to ``handle(event, origin)``.
    """

    name: str
    inputs: tuple[str, ...]
    input_schema: str
    from_record: Callable[[dict[str, Any]], Event]
    handle: Callable[[Any, str], Outcome]
    allow_json: bool = False
    #: Called with a batch's decoded (event, origin) pairs before ``handle`` runs on each,
    #: so a processor can batch its port calls (one round trip instead of one per record).
    prepare: Callable[[Sequence[tuple[Any, str]]], None] | None = None
    #: Pipelined bindings (slow, concurrent work such as LLM steps): ``start(event, origin)``
    #: begins the work and returns a future; ``finish(event, result)`` turns its result into
    #: the outcome once it is done. Records commit as they finish, in offset order, with up to
    #: ``max_in_flight`` started (see pipeline/runtime/pipelined.py); ``handle`` is unused.
    start: Callable[[Any, str], Future[Any]] | None = None
    finish: Callable[[Any, Any], Outcome] | None = None
    max_in_flight: int = 256
