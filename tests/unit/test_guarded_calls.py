"""A blocking call given up past its deadline (pipeline/runtime/guarded.py)."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.runtime.guarded import CallHung, GuardedCalls


def test_a_call_returns_its_result_or_raises_its_exception_in_the_caller() -> None:
    calls = GuardedCalls("test")
    try:
        assert calls.call(lambda a, b: a + b, 2, 3, wait_s=5) == 5
        with pytest.raises(ValueError, match="bad offsets"):
            calls.call(lambda: (_ for _ in ()).throw(ValueError("bad offsets")), wait_s=5)
        assert calls.call(threading.current_thread, wait_s=5) is not threading.current_thread()
    finally:
        calls.close()


def test_a_call_that_outlives_its_deadline_is_given_up_and_its_thread_left_behind() -> None:
    release = threading.Event()
    calls = GuardedCalls("stuck")
    started = time.monotonic()
    with pytest.raises(CallHung, match="wait did not return within 0 s"):
        calls.call(release.wait, wait_s=0.3)
    assert 0.25 <= time.monotonic() - started < 5
    assert calls._thread.is_alive()  # still inside the call: nothing can take it out
    release.set()  # the call returns at last: the thread ends instead of serving more
    calls._thread.join(timeout=5)
    assert not calls._thread.is_alive()
