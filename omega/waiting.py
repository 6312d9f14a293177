"""``wait_for``: poll a condition until it holds or a deadline passes.

The one waiting helper of the tests and the simulator: nothing sleeps for a fixed
time; ``interval`` only paces the polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_for"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline (an AssertionError: tests fail on it)."""


def wait_for(
    cond: Callable[[], T | None],
    timeout: float,
    what: str = "condition",
    *,
    interval: float = 0.02,
    alive: Callable[[], None] | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``cond`` until it returns a truthy value, and return that value.

    Raises ``WaitTimeout`` after ``timeout`` seconds. ``alive`` is called before
    each poll and may raise to stop the wait early (a watched process has died).
    An exception in ``retry_on`` raised by ``cond`` counts as "not yet" (and is
    named in the timeout's message).
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            value = cond()
        except retry_on as exc:
            last, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            why = f" (last error: {last})" if last is not None else ""
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}{why}")
        pause.wait(interval)
