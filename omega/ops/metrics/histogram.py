"""``FastHistogram``: a fixed-bucket histogram cheap enough for the request path.

prometheus-client's ``Histogram.observe`` takes a lock per bucket and per sum
(about 2-5 µs); this one finds the bucket with ``bisect`` and takes one lock for
one increment and one addition (well under a microsecond), and is turned into a
Prometheus histogram family only when scraped (``family()``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import HistogramMetricFamily


class FastHistogram:
    __slots__ = ("_counts", "_lock", "_sum", "bounds", "documentation", "name")

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)  # bucket i holds bounds[i-1] < value <= bounds[i]
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def totals(self) -> tuple[float, int]:
        """(sum, count) so far."""
        with self._lock:
            return self._sum, sum(self._counts)

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip((*[repr(b) for b in self.bounds], "+Inf"), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return HistogramMetricFamily(self.name, self.documentation, buckets=cumulative,
                                     sum_value=total)
