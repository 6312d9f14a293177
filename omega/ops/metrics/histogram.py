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

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """(cumulative buckets as Prometheus wants them, sum)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*[repr(b) for b in self.bounds], "+Inf"), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return cumulative, total

    def family(self) -> HistogramMetricFamily:
        buckets, total = self.snapshot()
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                     sum_value=total)


def labelled_family(name: str, documentation: str, label: str,
                    parts: dict[str, FastHistogram]) -> HistogramMetricFamily:
    """One histogram family with a sample set per label value."""
    fam = HistogramMetricFamily(name, documentation, labels=[label])
    for value, hist in parts.items():
        buckets, total = hist.snapshot()
        fam.add_metric([value], buckets, total)
    return fam
