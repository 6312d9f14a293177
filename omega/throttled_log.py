"""A log line per event kind at most every ``interval_s``, with the count it stands for.

Hostile traffic (oversized frames, connection floods) can produce an event per
packet; logging each would turn an attack on a port into an attack on the disk.
``ThrottledLog.event(kind, message, fields)`` logs the first event of a kind at
once, then at most one line per ``interval_s`` carrying ``suppressed``: the events
of that kind not logged since the previous line. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any


class ThrottledLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, *,
                 level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def event(self, kind: str, message: str, fields: dict[str, Any] | None = None) -> bool:
        """Log ``message`` unless a line of ``kind`` went out less than ``interval_s``
        ago; return whether it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        self._log.log(self._level, message, extra={"fields": {
            "kind": kind, "suppressed": suppressed, **(fields or {})}})
        return True
