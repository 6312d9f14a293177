"""Building a release: noisy, thresholded co-view sums → neighbour lists, popularity, trends.

``build_release`` is the hub's central differential privacy (DESIGN.md §7):

1. **Sensitivity.** What one TV can change in the counts, in L2: it has at most
   ``contributions`` reports in the sums, each of weight <= 1, naming one pair (at
   most ``pair_repeats`` reports per pair) and two titles (a title in at most
   ``title_repeats`` reports: windowed pairs name each view with its ``window``
   neighbours on either side). Each report adds to its pair, to its two titles, and
   to the same two titles in its region's trend window, so the squared L2
   sensitivity is ``P + 2·T`` with ``P`` and ``T`` the largest sums of squares the
   pair and title counts allow (:func:`sensitivity`).
2. **Noise.** Gaussian, σ = ``sensitivity · gaussian_sigma(ε, δ)`` (the analytic
   Gaussian mechanism from ``dp-accounting``), on every summed pair and title, and
   on the region windows. The release is (ε, δ)-DP for one TV's contribution;
   :class:`~omega.federation.accountant.PrivacyAccountant` adds releases up.
3. **Thresholds.** A pair or title is published only if its noisy count is at
   least ``threshold_sigmas · σ`` *and* it came in at least ``min_contributors``
   reports (a TV reports a pair once, so reports stand for distinct TVs; this is
   also what keeps one poisoner from planting a pair). Nothing else leaves the hub.
4. **Lists.** Each title's ``top_k`` neighbours by noisy pair count, normalized to
   sum to 1 per title (the best measured form, BENCHMARKS.md §1); popularity is the
   noisy title count; trends are per region (``trends.velocities``).

``fleet_size`` (benchmarks only) simulates the noise a fleet of that many TVs
would see: counts grow with the fleet and the noise does not, so on the real
``population``'s counts the noise, the threshold and the contributor count a
pair needs shrink by ``population / fleet_size``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from omega.federation.accountant import gaussian_sigma
from omega.federation.sums import CoviewSums
from omega.federation.trends import RegionWindow, velocities

__all__ = [
    "Release",
    "ReleaseError",
    "ReleaseSettings",
    "build_release",
    "neighbour_lists",
    "noisy_select",
    "sensitivity",
]

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
Normalize = Literal["row", "max", "none"]


class ReleaseError(ValueError):
    """Settings or inputs a release cannot be built from."""


@dataclass(frozen=True)
class ReleaseSettings:
    """How the hub turns sums into a release (config ``[hub.release]``)."""

    #: ε of one release (its δ below); the accountant adds releases up.
    epsilon: float = 1.0
    delta: float = 1e-6
    #: Neighbours per title.
    top_k: int = 20
    #: Publish a count only when its noisy value is >= threshold_sigmas · σ.
    threshold_sigmas: float = 3.0
    #: ... and it came in at least this many reports (distinct TVs: a TV sends a pair once).
    min_contributors: int = 2
    #: False: exact counts (tests, the noiseless benchmark row). ε is then infinite.
    noise: bool = True
    #: Most reports one TV can have in the summed counts (its report budget over the
    #: period the sums cover).
    contributions: int = 100
    #: Most reports of one TV naming the same pair (SyncAgent reports a pair once).
    pair_repeats: int = 1
    #: Most reports of one TV naming the same title (2 × the pair window of 3).
    title_repeats: int = 6
    #: How neighbour scores are normalized per title: "row" (sum 1), "max" (top 1), "none".
    normalize: Normalize = "row"
    #: Trending titles per region.
    trends_top: int = 50
    #: Benchmarks: simulate the noise of this many TVs, on counts of ``population`` TVs.
    fleet_size: int | None = None
    population: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ReleaseError(f"release setting {name}: {rule}")

        need(math.isfinite(self.epsilon) and self.epsilon > 0, "epsilon", "must be > 0")
        need(0 < self.delta < 1, "delta", "must be in (0, 1)")
        need(1 <= self.top_k <= 200, "top_k", "must be 1-200 (the TV accepts 200)")
        need(math.isfinite(self.threshold_sigmas) and self.threshold_sigmas >= 0,
             "threshold_sigmas", "must be >= 0")
        need(self.min_contributors >= 1, "min_contributors", "must be >= 1")
        need(self.contributions >= 1, "contributions", "must be >= 1")
        need(self.pair_repeats >= 1, "pair_repeats", "must be >= 1")
        need(self.title_repeats >= 1, "title_repeats", "must be >= 1")
        need(self.normalize in ("row", "max", "none"), "normalize", "must be row, max or none")
        need(self.trends_top >= 0, "trends_top", "must be >= 0")
        need((self.fleet_size is None) == (self.population is None), "fleet_size",
             "needs population (and population needs fleet_size)")
        if self.fleet_size is not None and self.population is not None:
            need(self.population >= 1 and self.fleet_size >= self.population, "fleet_size",
                 "must be >= population >= 1")

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of the counts to one TV (see :func:`sensitivity`)."""
        return sensitivity(self.contributions, self.pair_repeats, self.title_repeats)

    @property
    def sigma(self) -> float:
        """σ of the noise on real counts (0 without noise)."""
        if not self.noise:
            return 0.0
        return self.sensitivity * gaussian_sigma(self.epsilon, self.delta)

    @property
    def effective_sigma(self) -> float:
        """σ on the summed counts, scaled down for a simulated fleet."""
        if self.fleet_size is None or self.population is None:
            return self.sigma
        return self.sigma * self.population / self.fleet_size


def _max_square_sum(total: int, cap: int) -> int:
    """Largest Σ c_i² with Σ c_i = total and 0 <= c_i <= cap (integers)."""
    full, rest = divmod(total, cap)
    return full * cap * cap + rest * rest


def sensitivity(contributions: int, pair_repeats: int = 1, title_repeats: int = 6) -> float:
    """L2 change one TV can make: its pairs, titles and region titles (weights <= 1)."""
    pairs = _max_square_sum(contributions, min(pair_repeats, contributions))
    titles = _max_square_sum(2 * contributions, min(title_repeats, contributions))
    return math.sqrt(pairs + 2 * titles)


@dataclass(frozen=True)
class Release:
    """What the hub publishes (fedpath wraps it into a versioned ``GlobalUpdate``)."""

    neighbours: dict[str, list[tuple[str, float]]]
    """Content id -> its top-k neighbours, best first, normalized per ``settings.normalize``."""
    popularity: dict[str, float]
    """Content id -> noisy report count (published titles only)."""
    trends: dict[str, list[tuple[str, float]]]
    """Region -> (content id, velocity), best first."""
    sigma: float
    """σ of the noise on these counts (0 without noise; the simulated fleet's if any)."""
    epsilon: float
    """ε of this release (∞ without noise)."""
    titles_published: int
    pairs_published: int
    threshold: float = 0.0
    """The noisy count a pair or title had to reach."""
    stats: dict[str, int] = field(default_factory=dict)
    """Counts dropped on the way (unknown keys, too few contributors, below threshold)."""


def noisy_select(
    values: F64,
    reports: npt.NDArray[np.int64],
    *,
    sigma: float,
    threshold: float,
    min_contributors: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.bool_], F64]:
    """Noise every value, keep those that clear ``threshold`` with enough reports.

    Returns (published mask, noisy values). Without noise (``sigma`` 0) a value
    must still be positive and at least ``threshold``.
    """
    noisy = values + rng.normal(0.0, sigma, values.shape) if sigma > 0 else values.copy()
    mask = (reports >= min_contributors) & (noisy >= threshold) & (noisy > 0)
    return mask, noisy


def neighbour_lists(
    src: npt.NDArray[np.int64],
    dst: npt.NDArray[np.int64],
    val: F64,
    top_k: int,
    normalize: Normalize = "row",
) -> dict[int, tuple[npt.NDArray[np.int64], F64]]:
    """Per source, its ``top_k`` destinations by value (best first), normalized.

    Directed edges ``src -> dst``; pass both directions for unordered pairs.
    """
    if src.size == 0:
        return {}
    order = np.lexsort((-val, src))
    s, d, v = src[order], dst[order], val[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    counts = np.diff(np.r_[starts, s.size])
    rank = np.arange(s.size) - np.repeat(starts, counts)
    keep = rank < top_k
    s, d, v = s[keep], d[keep], v[keep]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    if normalize == "row":
        norm = np.add.reduceat(v, starts)
    elif normalize == "max":
        norm = v[starts]
    else:
        norm = np.ones(starts.size)
    out: dict[int, tuple[npt.NDArray[np.int64], F64]] = {}
    for i, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        scale = norm[i] if norm[i] > 0 else 1.0
        out[int(s[lo])] = (d[lo:hi], v[lo:hi] / scale)
    return out


def _positions(keys: U64, catalog_keys: U64) -> npt.NDArray[np.int64]:
    """Position of each key in the sorted catalog keys, -1 when absent."""
    if catalog_keys.size == 0:
        return np.full(keys.size, -1, dtype=np.int64)
    pos = np.searchsorted(catalog_keys, keys)
    pos = np.minimum(pos, catalog_keys.size - 1)
    found = catalog_keys[pos] == keys
    return np.where(found, pos, -1).astype(np.int64)


def build_release(
    sums: CoviewSums,
    catalog: Mapping[int, str],
    settings: ReleaseSettings,
    rng: np.random.Generator,
    *,
    regions: Mapping[str, RegionWindow] | None = None,
) -> Release:
    """Noise, threshold and publish the summed counts (see the module docs)."""
    sigma = settings.effective_sigma
    threshold = settings.threshold_sigmas * sigma
    # A simulated fleet has fleet/population times the reports of every pair.
    min_reports = settings.min_contributors
    if settings.fleet_size is not None and settings.population is not None:
        min_reports = max(1, math.ceil(min_reports * settings.population / settings.fleet_size))
    cat_keys = np.array(sorted(catalog), dtype=np.uint64)
    cat_ids = [catalog[int(k)] for k in cat_keys]
    stats: dict[str, int] = {}

    # Pairs -> neighbour lists.
    a, b, w, n = sums.pair_arrays()
    pa, pb = _positions(a, cat_keys), _positions(b, cat_keys)
    known = (pa >= 0) & (pb >= 0)
    stats["pairs_unknown_title"] = int((~known).sum())
    stats["pairs_few_contributors"] = int((known & (n < min_reports)).sum())
    pa, pb, w, n = pa[known], pb[known], w[known], n[known]
    mask, noisy = noisy_select(w, n, sigma=sigma, threshold=threshold,
                               min_contributors=min_reports, rng=rng)
    stats["pairs_below_threshold"] = int(((n >= min_reports) & ~mask).sum())
    pa, pb, v = pa[mask], pb[mask], noisy[mask]
    lists = neighbour_lists(np.r_[pa, pb], np.r_[pb, pa], np.r_[v, v], settings.top_k,
                            settings.normalize)
    neighbours = {
        cat_ids[src]: list(zip([cat_ids[j] for j in dst.tolist()], val.tolist(), strict=True))
        for src, (dst, val) in lists.items()
    }

    # Titles -> popularity.
    t, tw, tn = sums.title_arrays()
    pt = _positions(t, cat_keys)
    tknown = pt >= 0
    tmask, tnoisy = noisy_select(tw[tknown], tn[tknown], sigma=sigma, threshold=threshold,
                                 min_contributors=min_reports, rng=rng)
    popularity = {cat_ids[int(p)]: float(c)
                  for p, c in zip(pt[tknown][tmask], tnoisy[tmask], strict=True)}
    stats["titles_unknown"] = int((~tknown).sum())
    stats["titles_withheld"] = int((~tmask).sum())

    trends = {
        region: velocities(window, catalog, sigma=sigma, threshold=threshold, rng=rng,
                           top=settings.trends_top)
        for region, window in sorted((regions or {}).items())
    }
    return Release(
        neighbours=neighbours,
        popularity=popularity,
        trends=trends,
        sigma=sigma,
        epsilon=settings.epsilon if settings.noise else math.inf,
        titles_published=len(popularity),
        pairs_published=int(mask.sum()),
        threshold=threshold,
        stats=stats,
    )
