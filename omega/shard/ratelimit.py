"""Per-device rate limits.

Pushes: one per device per ``interval``. The authoritative record is replicated —
each device's record holds the wall time (ms) of its last applied push, stamped
by the leader into the Raft entry — so a new leader enforces the same limit after
a failover. ``push_retry_after`` is that check, a pure function. (A second push of
a device while its first still waits for the commit is caught by the group
committer's in-flight table, see ``groupcommit.Inflight``.)

Pulls and heartbeats are cheap reads served by every replica; ``KeyedLimiter``
(GCRA, a token bucket that keeps one float per key) stops a device from hammering
one replica. It is per process and forgets the oldest keys first when full.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


def push_retry_after(last_ms: int | None, now_ms: int, interval_ms: int) -> float | None:
    """Seconds until the device may push again, or None when it may push now.

    ``last_ms`` is the replicated time of the device's last applied push. A clock
    step backwards (last in the future) counts as "just pushed", never as a gift.
    """
    if last_ms is None or interval_ms <= 0:
        return None
    elapsed = now_ms - last_ms
    if elapsed >= interval_ms:
        return None
    return max(interval_ms - max(elapsed, 0), 1) / 1000.0


class KeyedLimiter:
    """GCRA limiter: on average one event per ``interval_s`` per key, ``burst`` at once.

    Thread-safe. Memory is bounded by ``max_keys``: a key idle for a full burst
    window carries no state worth keeping, so the least recently used keys go first.
    """

    def __init__(self, interval_s: float, burst: int = 1, *, max_keys: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s < 0 or burst < 1 or max_keys < 1:
            raise ValueError("interval_s >= 0, burst >= 1 and max_keys >= 1 required")
        self._interval = interval_s
        self._tolerance = interval_s * (burst - 1)
        self._max_keys = max_keys
        self._clock = clock
        self._tat: OrderedDict[bytes, float] = OrderedDict()  # key -> theoretical arrival time
        self._lock = threading.Lock()

    def acquire(self, key: bytes) -> float | None:
        """Take one event for ``key``: None if allowed, else seconds to wait."""
        if self._interval == 0:
            return None
        now = self._clock()
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            if tat - now > self._tolerance:
                return tat - now - self._tolerance
            self._tat[key] = tat + self._interval
            self._tat.move_to_end(key)
            self._evict(now)
            return None

    def _evict(self, now: float) -> None:
        # Keys in LRU order; the oldest whose TAT has passed carry no debt.
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat <= now or len(self._tat) > self._max_keys:
                del self._tat[key]
            else:
                break

    def __len__(self) -> int:
        with self._lock:
            return len(self._tat)

