"""An asyncio event loop on its own thread, where a worker's LLM calls are in flight, and the
gate that lets the batch lane start work only while no interactive work waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "ticketflow-llm") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run_all(self, coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
        """Run the coroutines concurrently on the loop; block the caller until all are done."""
        async def gather() -> list[T]:
            return list(await asyncio.gather(*coroutines))

        return asyncio.run_coroutine_threadsafe(gather(), self.loop).result()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Start the coroutine on the loop; the returned future completes when it does."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class LaneGate:
    """Interactive work goes first. Each lane has its own concurrency limit; a batch step
    starts only while no interactive step waits for a slot in this worker, so interactive
    steps never queue behind batch ones, and the batch lane keeps moving while interactive
    work is in flight below its limit (it is not starved by a steady interactive stream).
    Across workers, the batch lane's share of each provider's rate limit is capped as well
    (:class:`~pipeline.agent.runner.StepRunner`)."""

    def __init__(self, interactive_concurrency: int, batch_concurrency: int) -> None:
        self.interactive_concurrency = interactive_concurrency
        self.batch_concurrency = batch_concurrency
        self.interactive_waiting = 0
        self._clear: asyncio.Event | None = None
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _event(self) -> asyncio.Event:
        if self._clear is None:
            self._clear = asyncio.Event()
            self._clear.set()
        return self._clear

    def _semaphore(self, lane: str) -> asyncio.Semaphore:
        if lane not in self._slots:
            size = self.interactive_concurrency if lane == "interactive" else self.batch_concurrency
            self._slots[lane] = asyncio.Semaphore(size)
        return self._slots[lane]

    async def run(self, lane: str, work: Coroutine[Any, Any, T]) -> T:
        clear = self._event()
        if lane == "interactive":
            self.interactive_waiting += 1
            clear.clear()
            admitted = False
            try:
                async with self._semaphore(lane):
                    admitted = True
                    self._admitted()
                    return await work
            finally:
                if not admitted:
                    self._admitted()
                work.close()  # cancelled while waiting: never started (a no-op once it ran)
        try:
            async with self._semaphore(lane):
                await clear.wait()
                return await work
        finally:
            work.close()  # cancelled while waiting: never started (a no-op once it ran)

    def _admitted(self) -> None:
        self.interactive_waiting -= 1
        if self.interactive_waiting == 0:
            self._event().set()
