"""An asyncio event loop on its own thread, where a worker's LLM calls are in flight, and the
gate that lets the batch lane run only while no interactive work waits."""

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
    """Interactive work goes first: while any interactive step is in flight in this worker,
    batch steps wait before their next call (and at most ``batch_concurrency`` run at once)."""

    def __init__(self, interactive_concurrency: int, batch_concurrency: int) -> None:
        self.interactive_concurrency = interactive_concurrency
        self.batch_concurrency = batch_concurrency
        self._interactive = 0
        self._idle: asyncio.Event | None = None
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    def _semaphore(self, lane: str) -> asyncio.Semaphore:
        if lane not in self._slots:
            size = self.interactive_concurrency if lane == "interactive" else self.batch_concurrency
            self._slots[lane] = asyncio.Semaphore(size)
        return self._slots[lane]

    async def run(self, lane: str, work: Coroutine[Any, Any, T]) -> T:
        idle = self._event()
        if lane == "interactive":
            self._interactive += 1
            idle.clear()
            try:
                async with self._semaphore(lane):
                    return await work
            finally:
                work.close()  # cancelled while waiting: never started (a no-op once it ran)
                self._interactive -= 1
                if self._interactive == 0:
                    idle.set()
        try:
            async with self._semaphore(lane):
                await idle.wait()
                return await work
        finally:
            work.close()  # cancelled while waiting: never started (a no-op once it ran)
