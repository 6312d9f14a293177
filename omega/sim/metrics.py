"""Ranking metrics of the quality benchmark, with standard errors.

Every method ends as a top-k list per user (the brain returns one; the
baselines' full score vectors are cut by :func:`top_k`), and every metric is
computed from those lists, so a list from the brain and one from a baseline are
scored the same way. One relevant item per user: HR@k is 1 if it is in the list,
NDCG@k is ``1 / log2(position + 2)`` (position from 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def top_k(scores: FloatArray, exclude: Sequence[npt.ArrayLike], k: int) -> IntArray:
    """The ``k`` best items of each row of ``scores``, best first, ``-1`` padded.

    ``exclude[r]`` are the items row ``r`` may not recommend (its history).
    Ties are broken by the lower item index, so lists are deterministic. NaN
    scores and ``-inf`` never make a list.
    """
    n_rows, n_items = scores.shape
    if len(exclude) != n_rows:
        raise ValueError(f"{len(exclude)} exclusion lists for {n_rows} rows")
    out = np.full((n_rows, k), -1, dtype=np.int64)
    if k <= 0 or n_items == 0:
        return out
    work = np.where(np.isnan(scores), -np.inf, scores)
    for row, ex in enumerate(exclude):
        drop = np.asarray(ex, dtype=np.int64)
        if drop.size:
            work[row, drop] = -np.inf
    kk = min(k, n_items)
    # The k-th largest value of each row, then every item above it plus the
    # lowest-index items equal to it: exact ties are resolved by index.
    kth = -np.partition(-work, kk - 1, axis=1)[:, kk - 1]
    for row in range(n_rows):
        s = work[row]
        if kth[row] == -np.inf:
            # Fewer than k items may be recommended at all.
            cand = np.flatnonzero(s > -np.inf)
        else:
            above = np.flatnonzero(s > kth[row])
            equal = np.flatnonzero(s == kth[row])[: kk - len(above)]
            cand = np.concatenate([above, equal])
        order = np.lexsort((cand, -s[cand]))[:kk]
        chosen = cand[order]
        out[row, : len(chosen)] = chosen
    return out


def pad_lists(lists: Sequence[Sequence[int]], k: int) -> IntArray:
    """Ragged recommendation lists as a ``(n, k)`` array, cut to ``k``, ``-1`` padded."""
    out = np.full((len(lists), k), -1, dtype=np.int64)
    for row, items in enumerate(lists):
        cut = list(items)[:k]
        out[row, : len(cut)] = cut
    return out


def hit_ndcg(lists: IntArray, targets: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per-user HR and NDCG of ``lists`` (n, k) against one target item each."""
    target = np.asarray(targets, dtype=np.int64)
    if target.shape != (lists.shape[0],):
        raise ValueError(f"{target.shape[0]} targets for {lists.shape[0]} lists")
    match = lists == target[:, None]
    hit = match.any(axis=1)
    position = np.argmax(match, axis=1)
    ndcg = np.where(hit, 1.0 / np.log2(position + 2.0), 0.0)
    return hit.astype(np.float64), ndcg.astype(np.float64)


def coverage(lists: IntArray, n_items: int) -> float:
    """Share of the catalog that appears in at least one list."""
    if n_items <= 0:
        return 0.0
    shown = np.unique(lists[lists >= 0])
    return float(len(shown)) / float(n_items)


def mean_se(values: npt.ArrayLike) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


@dataclass(frozen=True)
class PairedDiff:
    """Mean of per-user differences ``a - b`` with its standard error and CI."""

    diff: float
    se: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The confidence interval excludes zero."""
        return self.low > 0.0 or self.high < 0.0


def paired_diff(a: npt.ArrayLike, b: npt.ArrayLike, z: float = Z95) -> PairedDiff:
    """Paired comparison of two methods scored on the same users, in the same order.

    Per-user differences remove the variance the two methods share (hard users
    are hard for both), so this interval is much tighter than comparing two
    means with their own standard errors.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in shape: {x.shape} vs {y.shape}")
    mean, se = mean_se(x - y)
    return PairedDiff(mean, se, mean - z * se, mean + z * se, int(x.size))


def group_means(values: npt.ArrayLike, groups: npt.ArrayLike) -> FloatArray:
    """The mean of ``values`` within each group, groups in sorted order of their labels."""
    x = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if x.shape != g.shape or x.ndim != 1:
        raise ValueError(f"values {x.shape} and groups {g.shape} differ or are not 1-d")
    _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.reshape(-1), weights=x, minlength=len(counts))
    means: FloatArray = sums / counts
    return means


def clustered_paired_diff(
    a: npt.ArrayLike, b: npt.ArrayLike, groups: npt.ArrayLike, z: float = Z95
) -> PairedDiff:
    """Paired comparison of cases that come in clusters (several cases per user).

    The cases of one user are not independent, so treating them as such would
    give an interval that is too narrow. Each user's cases are averaged first
    (per method), then the users are compared as in :func:`paired_diff`: the
    difference is the mean over users of each user's mean difference, and ``n``
    counts users. With the same number of cases per user this equals the
    difference of the case means.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in shape: {x.shape} vs {y.shape}")
    return paired_diff(group_means(x, groups), group_means(y, groups), z)
