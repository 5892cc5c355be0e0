"""A blocking client call that can be given up when it outlives its own timeout.

librdkafka (2.16) can wait in ``send_offsets_to_transaction`` past the timeout it was given,
until the group coordinator's broker changes state again (confluentinc/librdkafka#5456,
#5511): when the broker goes away while the call is in flight, the engine's thread stayed in
it for the whole outage and the watchdog restarted the worker (seen in the broker-restart
test: a 30 s outage restarted both workers, a 3 s one, with the broker's own restart, once in
CI). A thread blocked in C cannot be interrupted; so the call runs on a thread of its own
and the caller waits for it with a deadline. Past it the caller gets :class:`CallHung` and
carries on with a new producer (whose ``init_transactions`` fences the stuck one); the
stuck thread and its producer are left behind, never closed under it (closing a handle that
another thread is inside is not safe).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class CallHung(Exception):
    """The call did not return by its deadline; its thread is still inside it."""


class GuardedCalls:
    """Runs one call at a time on a daemon thread of its own; :meth:`call` waits for each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], threading.Event, list[Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args, done, box = job
            try:
                box.append((True, function(*args)))
            except BaseException as exc:  # handed to the caller, raised there
                box.append((False, exc))
            finally:
                done.set()

    def call(self, function: Callable[..., Any], *args: Any, wait_s: float) -> Any:
        """``function(*args)``'s result (or its exception), or :class:`CallHung` after
        ``wait_s``; after CallHung this object is spent (its thread may never return)."""
        done = threading.Event()
        box: list[Any] = []
        self._jobs.put((function, args, done, box))
        if not done.wait(wait_s):
            self._jobs.put(None)  # should the call ever return, the thread ends there
            raise CallHung(f"{self.name}: {getattr(function, '__name__', 'call')} did not return within {wait_s:.0f} s")
        ok, value = box[0]
        if ok:
            return value
        raise value

    def close(self) -> None:
        self._jobs.put(None)
