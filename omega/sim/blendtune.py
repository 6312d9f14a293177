"""The federated rows' brain weights, chosen on validation only.

Every central baseline of the quality benchmark has its hyper-parameters chosen on
the validation item of the data set it runs on (EASE's λ, item-kNN's k). The
federated rows get the same treatment: the brain's blend of the crowd's lists with
its own content similarity and the crowd's popularity, and how fast its history's
weight decays against the lists, are chosen from a small grid by validation
NDCG@10 (each user's training history predicting its validation item) with the
brain's ranking formula in numpy (:class:`omega.sim.federated.BrainBlendScorer`).
The test item is never looked at. A data set where popularity is strong (dense
catalogs) gets a larger popularity weight; one where the lists carry the signal keeps
the product's defaults, which were chosen the same way on ml-latest-small.

The product's defaults are kept unless a grid point beats them on validation by
more than one standard error of the paired per-user difference: on ml-latest-small
the best point led the defaults by 0.0001 NDCG@10 and lost 0.008 HR@10 on the test
item — choosing on a difference that small is choosing on noise.

The signals are computed once per decay and reused for every weight pair, so the
grid costs a few validation passes, not one per point.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from omega.brain.settings import BrainSettings
from omega.federation.release import Release
from omega.sim.federated import BrainBlendScorer
from omega.sim.metrics import hit_ndcg, top_k
from omega.sim.movielens import Item

__all__ = ["BlendGrid", "BlendPoint", "tune_blend"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Users scored per block (bounds the signal rows held at once).
_BLOCK = 128


@dataclass(frozen=True)
class BlendGrid:
    """The values tried; the product's defaults (0.6, 1.5, 0.05) are among them."""

    decays: tuple[float, ...] = (0.5, 0.6, 0.7)
    contents: tuple[float, ...] = (0.75, 1.5)
    popularities: tuple[float, ...] = (0.05, 0.25)

    def __post_init__(self) -> None:
        for name in ("decays", "contents", "popularities"):
            values = getattr(self, name)
            if not values or any(not (np.isfinite(v) and v >= 0) for v in values):
                raise ValueError(f"BlendGrid.{name} must be non-empty, finite and >= 0")


@dataclass(frozen=True)
class BlendPoint:
    """One point of the grid and its validation figures."""

    recency_decay: float
    content: float
    popularity: float
    val_hr: float
    val_ndcg: float

    def settings(self, base: BrainSettings) -> BrainSettings:
        """``base`` with this point's decay and weights (popularity once lists exist)."""
        return replace(base, recency_decay=self.recency_decay,
                       recommender=replace(base.recommender, content=self.content,
                                           popularity_with_crowd=self.popularity))


def tune_blend(
    release: Release,
    items: Sequence[Item],
    embeddings: F32,
    histories: Sequence[IntArray],
    fractions: Sequence[FloatArray],
    targets: Sequence[int],
    *,
    base: BrainSettings | None = None,
    grid: BlendGrid = BlendGrid(),
    k: int = 10,
    default: tuple[float, float, float] | None = None,
) -> tuple[BlendPoint, list[BlendPoint]]:
    """The chosen grid point, and every point with its validation figures.

    ``histories`` / ``fractions`` are the validation histories (oldest view first)
    and ``targets`` their validation items. The best point is the one with the best
    validation NDCG@10 (then HR@10; ties keep the earlier point). ``default``
    ``(decay, content, popularity)``, when it is a grid point, is chosen instead
    unless the best beats it by more than one standard error of the paired
    per-user NDCG@10 difference.
    """
    from omega.brain import recommender as rk

    if not (len(histories) == len(fractions) == len(targets)):
        raise ValueError("histories, fractions and targets must have the same length")
    base = base or BrainSettings()
    weights = list(itertools.product(grid.contents, grid.popularities))
    points: list[BlendPoint] = []
    per_user: list[FloatArray] = []
    for decay in grid.decays:
        scorer = BrainBlendScorer(release, items, embeddings, replace(base, recency_decay=decay))
        pop = scorer.popularity_signal()
        zero = np.zeros(len(items), dtype=np.float32)
        lists = [np.full((len(histories), k), -1, dtype=np.int64) for _ in weights]
        for lo in range(0, len(histories), _BLOCK):
            part = histories[lo: lo + _BLOCK]
            crowd, content = scorer.signals(part, fractions[lo: lo + _BLOCK])
            for w, (c, p) in enumerate(weights):
                # As the brain: popularity_with_crowd once lists exist, else its own weight.
                rec = replace(base.recommender, content=c,
                              popularity=p if scorer.has_lists else base.recommender.popularity)
                rows = np.stack([rk.blend(rk.Signals(crowd[i], content[i], pop, zero, zero),
                                          rec)[0] for i in range(len(part))])
                lists[w][lo: lo + len(part)] = top_k(rows.astype(np.float64), part, k)
        for (c, p), got in zip(weights, lists, strict=True):
            hr, ndcg = hit_ndcg(got, list(targets))
            points.append(BlendPoint(decay, c, p, float(hr.mean()), float(ndcg.mean())))
            per_user.append(ndcg)
    # max keeps the first of equal keys: an earlier grid point wins a tie.
    top = max(range(len(points)),
              key=lambda i: (round(points[i].val_ndcg, 12), round(points[i].val_hr, 12)))
    keep = next((i for i, q in enumerate(points)
                 if (q.recency_decay, q.content, q.popularity) == default), None)
    if keep is not None and keep != top:
        diff = per_user[top] - per_user[keep]
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        if float(diff.mean()) <= se:
            return points[keep], points
    return points[top], points
