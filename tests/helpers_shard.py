"""Test helpers of the shard suite."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], object], timeout: float, what: str = "condition",
             interval: float = 0.01) -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds.

    Uses a blocking Event-free poll on the monotonic clock; ``interval`` only paces
    the polling (it is not a sleep a test relies on for ordering).
    """
    import threading

    deadline = time.monotonic() + timeout
    ev = threading.Event()
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        ev.wait(interval)
