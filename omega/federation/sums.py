"""Co-view sums: what the hub adds up from opened reports (DESIGN.md §7).

Each opened report names one unordered pair of titles (64-bit keys,
``report.title_key``) with a weight in (0, 1]. The hub keeps, per pair and per
title, the summed weight and the number of reports. Weights travel as bytes
(``weight = byte / 255``, see ``report.py``), so they are summed here as exact
integers in units of 1/255: addition of integers is associative, so sums merged
in any order or grouping are *equal*, not merely close (a float sum would not be).

Clipping (poisoning bounds, DESIGN.md §7 "robust to poisoning"):

- per report: the weight is clipped to ``[0, 1]`` (a report cannot count more than
  one view pair);
- per batch (``add_batch``): one batch of shuffled reports may add at most
  ``pair_cap`` to any pair and ``title_cap`` to any title; the excess is dropped
  and counted in ``BatchStats``. A batch comes from at least k devices, each within
  its own budget, so a batch that piles onto one pair is a flood, not taste.

Serialized (``to_bytes``) as msgpack with columnar, sorted, little-endian arrays:
deterministic bytes for equal sums, compact enough for Raft and LMDB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgpack
import numpy as np
import numpy.typing as npt

__all__ = [
    "BATCH_PAIR_CAP",
    "BATCH_TITLE_CAP",
    "WEIGHT_UNITS",
    "BatchStats",
    "CoViewLike",
    "CoviewSums",
    "SumsError",
    "coview_units",
]

#: One report's full weight, in the integer units the sums count in (weight byte / 255).
WEIGHT_UNITS = 255
#: Default per-batch caps, in reports' worth of weight.
BATCH_PAIR_CAP = 32.0
BATCH_TITLE_CAP = 128.0
_FORMAT = 1
_U64_MAX = 2**64 - 1

_K = TypeVar("_K", int, tuple[int, int])
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


class SumsError(ValueError):
    """Bad input to the sums (a malformed co-view, or bytes that are not sums). Nothing changed."""


class CoViewLike(Protocol):
    """``omega.federation.report.CoView``: keys ``a < b``, weight in (0, 1]."""

    @property
    def a(self) -> int: ...

    @property
    def b(self) -> int: ...

    @property
    def weight(self) -> float: ...


@dataclass(frozen=True)
class BatchStats:
    """What one ``add_batch`` did."""

    reports: int
    """Co-view reports counted (dummies are never passed here: they carry no pair)."""
    clipped_weight: float
    """Weight dropped by the per-batch caps, in reports' worth."""
    clipped_pairs: int
    """Pairs whose batch total hit ``pair_cap``."""
    clipped_titles: int
    """Titles whose batch total hit ``title_cap``."""


def coview_units(cv: CoViewLike) -> tuple[int, int, int]:
    """Validate a co-view; its keys and its weight in integer units, clipped to one report."""
    a, b, w = cv.a, cv.b, cv.weight
    if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b <= _U64_MAX):
        raise SumsError(f"a co-view needs keys 0 <= a < b < 2^64, got {a!r}, {b!r}")
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
        raise SumsError(f"a co-view weight is a finite number >= 0, got {w!r}")
    return a, b, min(WEIGHT_UNITS, round(w * WEIGHT_UNITS))


def _add(table: dict[_K, list[int]], key: _K, w: int, n: int) -> None:
    cell = table.get(key)
    if cell is None:
        table[key] = [w, n]
    else:
        cell[0] += w
        cell[1] += n


class CoviewSums:
    """Weighted counts of titles and unordered title pairs; merges by addition.

    ``pairs[(a, b)]`` and ``titles[t]`` are ``[weight units, reports]``; read them
    through :meth:`pair`, :meth:`title`, :meth:`pair_arrays`, :meth:`title_arrays`.
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int], list[int]] = {}
        self._titles: dict[int, list[int]] = {}
        self.reports = 0

    # -- adding -----------------------------------------------------------------------

    def add(self, cv: CoViewLike) -> None:
        """Count one opened co-view report (its weight clipped to one report)."""
        a, b, w = coview_units(cv)
        self._bump(a, b, w)
        self.reports += 1

    def add_batch(
        self,
        cvs: Iterable[CoViewLike],
        *,
        pair_cap: float = BATCH_PAIR_CAP,
        title_cap: float = BATCH_TITLE_CAP,
    ) -> BatchStats:
        """Count one batch, no pair gaining more than ``pair_cap`` nor a title ``title_cap``.

        Every report is validated before anything is counted: a bad one raises
        :class:`SumsError` and the sums are unchanged.
        """
        if not (pair_cap > 0 and title_cap > 0):
            raise SumsError("batch caps must be positive")
        items = [coview_units(cv) for cv in cvs]
        pcap = round(pair_cap * WEIGHT_UNITS)
        tcap = round(title_cap * WEIGHT_UNITS)
        pair_used: dict[tuple[int, int], int] = {}
        title_used: dict[int, int] = {}
        clipped = 0
        hit_pairs: set[tuple[int, int]] = set()
        hit_titles: set[int] = set()
        for a, b, w in items:
            room = pcap - pair_used.get((a, b), 0)
            room = min(room, tcap - title_used.get(a, 0), tcap - title_used.get(b, 0))
            take = max(0, min(w, room))
            if take < w:
                clipped += w - take
                if pair_used.get((a, b), 0) + w > pcap:
                    hit_pairs.add((a, b))
                for t in (a, b):
                    if title_used.get(t, 0) + w > tcap:
                        hit_titles.add(t)
            pair_used[(a, b)] = pair_used.get((a, b), 0) + take
            title_used[a] = title_used.get(a, 0) + take
            title_used[b] = title_used.get(b, 0) + take
            self._bump(a, b, take)
        self.reports += len(items)
        return BatchStats(len(items), clipped / WEIGHT_UNITS, len(hit_pairs), len(hit_titles))

    def _bump(self, a: int, b: int, w: int) -> None:
        _add(self._pairs, (a, b), w, 1)
        _add(self._titles, a, w, 1)
        _add(self._titles, b, w, 1)

    def merge(self, other: CoviewSums) -> None:
        """Add ``other`` into these sums (``other`` is unchanged)."""
        for pair, (w, n) in other._pairs.items():
            _add(self._pairs, pair, w, n)
        for title, (w, n) in other._titles.items():
            _add(self._titles, title, w, n)
        self.reports += other.reports

    # -- reading ------------------------------------------------------------------------

    def pair(self, a: int, b: int) -> tuple[float, int]:
        """(summed weight, reports) of the unordered pair ``{a, b}``; zeros if never seen."""
        w, n = self._pairs.get((min(a, b), max(a, b)), (0, 0))
        return w / WEIGHT_UNITS, n

    def title(self, t: int) -> tuple[float, int]:
        """(summed weight, reports) of one title; zeros if never seen."""
        w, n = self._titles.get(t, (0, 0))
        return w / WEIGHT_UNITS, n

    @property
    def n_pairs(self) -> int:
        return len(self._pairs)

    @property
    def n_titles(self) -> int:
        return len(self._titles)

    def pairs(self) -> Iterator[tuple[int, int, float, int]]:
        """Every pair as ``(a, b, weight, reports)`` in key order."""
        for (a, b), (w, n) in sorted(self._pairs.items()):
            yield a, b, w / WEIGHT_UNITS, n

    def pair_arrays(self) -> tuple[U64, U64, npt.NDArray[np.float64], I64]:
        """Columns ``a, b, weight, reports`` of every pair, sorted by (a, b)."""
        a, b, w, n = self._pair_columns()
        return a, b, w.astype(np.float64) / WEIGHT_UNITS, n

    def title_arrays(self) -> tuple[U64, npt.NDArray[np.float64], I64]:
        """Columns ``key, weight, reports`` of every title, sorted by key."""
        t, w, n = self._title_columns()
        return t, w.astype(np.float64) / WEIGHT_UNITS, n

    def _pair_columns(self) -> tuple[U64, U64, I64, I64]:
        m = len(self._pairs)
        keys = np.array(list(self._pairs), dtype=np.uint64).reshape(m, 2)
        vals = np.array(list(self._pairs.values()), dtype=np.int64).reshape(m, 2)
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        return keys[order, 0], keys[order, 1], vals[order, 0], vals[order, 1]

    def _title_columns(self) -> tuple[U64, I64, I64]:
        m = len(self._titles)
        t = np.array(list(self._titles), dtype=np.uint64).reshape(m)
        vals = np.array(list(self._titles.values()), dtype=np.int64).reshape(m, 2)
        order = np.argsort(t, kind="stable")
        return t[order], vals[order, 0], vals[order, 1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CoviewSums):
            return NotImplemented
        return (self.reports == other.reports and self._pairs == other._pairs
                and self._titles == other._titles)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CoviewSums(reports={self.reports}, pairs={self.n_pairs}, titles={self.n_titles})"

    # -- bytes -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Deterministic msgpack: equal sums give equal bytes."""
        a, b, pw, pn = self._pair_columns()
        t, tw, tn = self._title_columns()
        doc = {
            "format": _FORMAT,
            "reports": self.reports,
            "pa": a.astype("<u8").tobytes(),
            "pb": b.astype("<u8").tobytes(),
            "pw": pw.astype("<i8").tobytes(),
            "pn": pn.astype("<i8").tobytes(),
            "t": t.astype("<u8").tobytes(),
            "tw": tw.astype("<i8").tobytes(),
            "tn": tn.astype("<i8").tobytes(),
        }
        out: bytes = msgpack.packb(doc, use_bin_type=True)
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> CoviewSums:
        """Sums from :meth:`to_bytes`; :class:`SumsError` for anything else."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:
            raise SumsError(f"not co-view sums: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise SumsError("not co-view sums (unknown format)")
        reports = doc.get("reports")
        if isinstance(reports, bool) or not isinstance(reports, int) or reports < 0:
            raise SumsError("co-view sums: bad report count")
        cols = {}
        for name, dtype in (("pa", "<u8"), ("pb", "<u8"), ("pw", "<i8"), ("pn", "<i8"),
                            ("t", "<u8"), ("tw", "<i8"), ("tn", "<i8")):
            raw = doc.get(name)
            if not isinstance(raw, bytes) or len(raw) % 8:
                raise SumsError(f"co-view sums: column {name!r} missing or torn")
            cols[name] = np.frombuffer(raw, dtype=dtype)
        m, k = len(cols["pa"]), len(cols["t"])
        if any(len(cols[c]) != m for c in ("pb", "pw", "pn")) or any(
            len(cols[c]) != k for c in ("tw", "tn")
        ):
            raise SumsError("co-view sums: columns of different lengths")
        if m and not bool((cols["pa"] < cols["pb"]).all()):
            raise SumsError("co-view sums: a pair with a >= b")
        for c in ("pw", "pn", "tw", "tn"):
            if len(cols[c]) and int(cols[c].min()) < 0:
                raise SumsError(f"co-view sums: negative values in {c!r}")
        out = cls()
        out.reports = reports
        # tolist() converts whole columns to Python ints at once (10× faster than per item).
        out._pairs = dict(zip(
            zip(cols["pa"].tolist(), cols["pb"].tolist(), strict=True),
            map(list, zip(cols["pw"].tolist(), cols["pn"].tolist(), strict=True)),
            strict=True,
        ))
        out._titles = dict(zip(
            cols["t"].tolist(),
            map(list, zip(cols["tw"].tolist(), cols["tn"].tolist(), strict=True)),
            strict=True,
        ))
        if len(out._pairs) != m or len(out._titles) != k:
            raise SumsError("co-view sums: duplicate keys")
        return out
