"""Per-region trends: titles whose recent counts grow faster than their baseline.

The hub keeps one :class:`RegionWindow` per region (batches arrive with their
region label only). Each opened co-view adds its weight to both titles' *recent*
counts; at every release the hub calls :meth:`RegionWindow.roll`, which folds the
recent counts into the *baseline* and counts one more period. Both are integer
sums (units of 1/255 of a report, as ``sums.py``), so windows merge by addition.

The velocity of a title (:func:`velocities`) compares its (noisy) recent count
with what its baseline predicts for one period::

    expected = baseline / periods        velocity = (recent - expected) / sqrt(expected + 1)

a growth measured in standard deviations of a Poisson count: a title going from
5 to 50 a period scores higher than one going from 5,000 to 5,100. Only titles
whose noisy recent count clears the release threshold are scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import msgpack
import numpy as np

from omega.federation.sums import WEIGHT_UNITS, CoViewLike, SumsError, coview_units

__all__ = ["RegionWindow", "TrendsError", "velocities"]

_FORMAT = 1


class TrendsError(SumsError):
    """Bytes that are not a region window, or a bad co-view. Nothing changed."""


class RegionWindow:
    """Recent and baseline title counts of one region; merges by addition."""

    def __init__(self) -> None:
        self.recent: dict[int, int] = {}
        """Title key -> weight units since the last roll."""
        self.baseline: dict[int, int] = {}
        """Title key -> weight units of every earlier period."""
        self.periods = 0
        """Periods folded into the baseline."""

    def add(self, cv: CoViewLike) -> None:
        """Count one opened co-view for both of its titles."""
        self.add_batch([cv])

    def add_batch(self, cvs: Iterable[CoViewLike]) -> None:
        """Count co-views (validated first: a bad one changes nothing)."""
        try:
            items = [coview_units(cv) for cv in cvs]
        except SumsError as exc:
            raise TrendsError(str(exc)) from None
        for a, b, w in items:
            self.recent[a] = self.recent.get(a, 0) + w
            self.recent[b] = self.recent.get(b, 0) + w

    def merge(self, other: RegionWindow) -> None:
        """Add another shard's or replica's window of the same region and periods."""
        for mine, theirs in ((self.recent, other.recent), (self.baseline, other.baseline)):
            for key, w in theirs.items():
                mine[key] = mine.get(key, 0) + w
        self.periods = max(self.periods, other.periods)

    def roll(self) -> None:
        """End a period: recent counts join the baseline."""
        for key, w in self.recent.items():
            self.baseline[key] = self.baseline.get(key, 0) + w
        self.recent = {}
        self.periods += 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegionWindow):
            return NotImplemented
        return (self.recent, self.baseline, self.periods) == (
            other.recent, other.baseline, other.periods)

    __hash__ = None  # type: ignore[assignment]

    def to_bytes(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "periods": self.periods,
            "recent": sorted([k, w] for k, w in self.recent.items()),
            "baseline": sorted([k, w] for k, w in self.baseline.items()),
        }
        out: bytes = msgpack.packb(doc, use_bin_type=True)
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> RegionWindow:
        try:
            doc = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:
            raise TrendsError(f"not a region window: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise TrendsError("not a region window (unknown format)")
        out = cls()
        periods = doc.get("periods")
        if isinstance(periods, bool) or not isinstance(periods, int) or periods < 0:
            raise TrendsError("region window: bad period count")
        out.periods = periods
        for name in ("recent", "baseline"):
            table: dict[int, int] = {}
            rows = doc.get(name)
            if not isinstance(rows, list):
                raise TrendsError(f"region window: {name!r} missing")
            for row in rows:
                if not (isinstance(row, list) and len(row) == 2
                        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                for v in row)):
                    raise TrendsError(f"region window: bad {name!r} entry {row!r}")
                table[row[0]] = row[1]
            setattr(out, name, table)
        return out

    def __repr__(self) -> str:
        return (f"RegionWindow(recent={len(self.recent)}, baseline={len(self.baseline)}, "
                f"periods={self.periods})")


def velocities(
    window: RegionWindow,
    catalog: Mapping[int, str],
    *,
    sigma: float,
    threshold: float,
    rng: np.random.Generator,
    top: int,
) -> list[tuple[str, float]]:
    """The region's ``top`` titles by velocity, best first, from noisy counts.

    Recent and baseline counts each get Gaussian noise of ``sigma`` (in reports'
    worth); a title is scored only if its noisy recent count is at least
    ``threshold`` and its velocity is positive. Keys outside ``catalog`` are skipped.
    """
    keys = [k for k in window.recent if k in catalog]
    if not keys:
        return []
    recent = np.array([window.recent[k] for k in keys], dtype=np.float64) / WEIGHT_UNITS
    base = np.array([window.baseline.get(k, 0) for k in keys], dtype=np.float64) / WEIGHT_UNITS
    if sigma > 0:
        recent = recent + rng.normal(0.0, sigma, len(keys))
        base = base + rng.normal(0.0, sigma, len(keys))
    expected = np.clip(base, 0.0, None) / max(window.periods, 1)
    score = (recent - expected) / np.sqrt(expected + 1.0)
    ok = (recent >= threshold) & (score > 0)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-score[idx], kind="stable")][:top]
    return [(catalog[keys[i]], round(float(score[i]), 4)) for i in idx if math.isfinite(score[i])]
