"""When the sync agent wakes: the tier's jittered interval, and backoff after failures.

Plain arithmetic over an injected clock and random source, so tests drive it
without waiting. ``Schedule`` answers "when is the next sync / heartbeat due" and
"how long may I sleep": the agent sleeps exactly that long on a timer (no polling).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "Schedule"]


@dataclass
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential
    Backoff And Jitter", 2015): the n-th consecutive failure waits
    uniform(0, min(cap, base · 2^(n-1))). Full jitter spreads a fleet that failed
    together (a shard group down) instead of bringing it back in waves.
    """

    base_s: float
    cap_s: float
    rng: random.Random
    failures: int = 0

    def ceiling(self) -> float:
        """The upper bound of the next wait (0 with no failure)."""
        if self.failures == 0:
            return 0.0
        return float(min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 60)))

    def fail(self) -> float:
        """Record a failure; returns the wait before the next attempt."""
        self.failures += 1
        return self.rng.uniform(0.0, self.ceiling())

    def reset(self) -> None:
        self.failures = 0


class Schedule:
    """Next-due times (monotonic seconds) of the sync and the heartbeat."""

    def __init__(self, interval_s: float, jitter: float, heartbeat_s: float,
                 backoff: Backoff, now: float, rng: random.Random) -> None:
        self.interval_s = interval_s
        self.jitter = jitter
        self.heartbeat_s = heartbeat_s
        self.backoff = backoff
        self._rng = rng
        # A TV that just booted syncs soon, but not with the rest of a fleet that
        # rebooted together: its first sync lands anywhere in the first interval.
        self.next_sync = now + rng.uniform(0.0, interval_s) * 0.5
        self.next_heartbeat = now + heartbeat_s
        self.retry_after = 0.0

    def _jittered(self, base: float) -> float:
        return base * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def synced(self, now: float) -> None:
        """A sync succeeded: the next one is one jittered interval away."""
        self.backoff.reset()
        self.next_sync = now + max(self._jittered(self.interval_s), self.retry_after)
        self.retry_after = 0.0

    def failed(self, now: float, retry_after_s: float = 0.0) -> float:
        """A sync failed: back off (never sooner than the shard asked); returns the wait."""
        wait = max(self.backoff.fail(), retry_after_s)
        self.next_sync = now + wait
        return wait

    def heartbeat_done(self, now: float) -> None:
        self.next_heartbeat = now + self._jittered(self.heartbeat_s)

    def sync_due(self, now: float) -> bool:
        return now >= self.next_sync

    def heartbeat_due(self, now: float) -> bool:
        return now >= self.next_heartbeat

    def sleep_for(self, now: float) -> float:
        """Seconds until the next thing is due (>= 0)."""
        return max(0.0, min(self.next_sync, self.next_heartbeat) - now)

    def state(self, now: float) -> dict[str, float | int]:
        return {"next_sync_in_s": round(max(0.0, self.next_sync - now), 3),
                "next_heartbeat_in_s": round(max(0.0, self.next_heartbeat - now), 3),
                "failures": self.backoff.failures,
                "backoff_ceiling_s": round(self.backoff.ceiling(), 3)}
