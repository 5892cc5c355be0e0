"""The processor contract: what a processor gives the runtime, and nothing about Kafka.

A processor is pure over a batch. It finishes records in one of two ways:

* **in order** (``handle_batch``): ``handle_batch(batch) -> outcomes`` gets the decoded
  ``(event, origin)`` pairs of a consumed batch and returns one
  :data:`~pipeline.processing.Outcome` per record, in order, so that it can make one round
  trip to a port for the whole batch (an embedding batch, a pipelined Redis claim). It may
  return fewer outcomes than records: it stopped at a retryable failure, and the records
  past it were not handled (the runtime consumes them again). Nothing is kept between
  calls. A processor that handles one record at a time wraps its ``handle(event, origin)``
  with :func:`per_record`;
* **concurrently** (``start``/``finish``, for slow work such as LLM steps):
  ``start(event, origin)`` begins the work and returns a future; ``finish(event, result)``
  turns the result into the outcome once it is done.

Either way the runtime (pipeline/runtime/engine.py) commits outcomes in offset order per
partition, in transactions, and treats failures by one policy (pipeline/runtime/failures.py).
``origin`` identifies one delivery of one record (opaque; idempotency stores use it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pipeline.events import Event
from pipeline.processing import Failure, Outcome
from pipeline.runtime.failures import as_failure

Batch = Sequence[tuple[Any, str]]
HandleBatch = Callable[[Batch], Sequence[Outcome]]


@dataclass(frozen=True)
class Binding:
    """A processor as the runtime sees it.

    ``name`` names the consumer group (one group per processor); ``inputs`` are catalog
    topic names; records decode with ``input_schema`` (JSON too when ``allow_json``) and
    become events with ``from_record``. Exactly one of ``handle_batch`` and
    ``start``/``finish`` is given; ``max_in_flight`` bounds the records started and not
    yet committed of a concurrent processor. A ``background`` processor (no customer waits
    on it) commits less often, in bigger transactions.
    """

    name: str
    inputs: tuple[str, ...]
    input_schema: str
    from_record: Callable[[dict[str, Any]], Event]
    handle_batch: HandleBatch | None = None
    allow_json: bool = False
    start: Callable[[Any, str], Future[Any]] | None = None
    finish: Callable[[Any, Any], Outcome] | None = None
    max_in_flight: int = 256
    #: no customer waits on its outputs: it commits every ``background_commit_interval_ms``
    background: bool = False

    def __post_init__(self) -> None:
        if (self.handle_batch is None) == (self.start is None or self.finish is None):
            raise ValueError(f"{self.name}: give handle_batch, or start and finish")

    @property
    def concurrent(self) -> bool:
        return self.handle_batch is None


def per_record(name: str, handle: Callable[[Any, str], Outcome]) -> HandleBatch:
    """``handle_batch`` for a processor that handles one record at a time: an exception
    becomes the record's Failure (a bug dead-letters its record, it does not stop the
    stream), and handling stops after the first retryable failure."""
    def handle_batch(batch: Batch) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event, origin in batch:
            try:
                outcome = handle(event, origin)
            except Exception as exc:
                outcome = as_failure(name, exc, origin)
            outcomes.append(outcome)
            if isinstance(outcome, Failure) and outcome.retryable:
                break
        return outcomes
    return handle_batch
