"""The supervisor's decisions as pure functions: whether to restart, what, and when to give up."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from omega.actors.spec import RestartType, Strategy

__all__ = ["RestartIntensity", "RestartPlan", "restart_plan", "wants_restart"]


def wants_restart(restart: RestartType, abnormal: bool) -> bool:
    """OTP's rule: permanent always, transient only after an abnormal exit, temporary never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return abnormal
    return False


@dataclass(frozen=True)
class RestartPlan:
    """Child indexes to stop (already in stop order: reverse) and then to start (in order)."""

    stop: tuple[int, ...]
    start: tuple[int, ...]


def restart_plan(strategy: Strategy, count: int, failed: int) -> RestartPlan:
    """Which siblings of child ``failed`` (of ``count``) to stop and restart."""
    if not 0 <= failed < count:
        raise ValueError(f"failed index {failed} out of range for {count} children")
    if strategy == "one_for_one":
        return RestartPlan(stop=(), start=(failed,))
    if strategy == "one_for_all":
        others = tuple(i for i in reversed(range(count)) if i != failed)
        return RestartPlan(stop=others, start=tuple(range(count)))
    if strategy == "rest_for_one":
        return RestartPlan(
            stop=tuple(reversed(range(failed + 1, count))), start=tuple(range(failed, count))
        )
    raise ValueError(f"unknown strategy {strategy!r}")


class RestartIntensity:
    """A sliding window of restart times (OTP ``add_restart/3``).

    ``add()`` records a restart now and says whether the supervisor may go on:
    False once more than ``max_restarts`` fall within the last ``within_s`` seconds.
    The clock is injectable (monotonic seconds) so tests need no sleeps.
    """

    def __init__(self, max_restarts: int, within_s: float, clock: Callable[[], float]) -> None:
        self.max_restarts = max_restarts
        self.within_s = within_s
        self._clock = clock
        self._times: deque[float] = deque()

    def add(self) -> bool:
        now = self._clock()
        self._times.append(now)
        while self._times and now - self._times[0] >= self.within_s:
            self._times.popleft()
        return len(self._times) <= self.max_restarts

    def __len__(self) -> int:
        """Restarts currently inside the window (as of the last ``add``)."""
        return len(self._times)
