"""Centralized baselines of the quality benchmark, in plain numpy.

Each baseline is a :class:`Scorer`: given users' time-ordered histories (catalog
indices, oldest first) it returns a full score row per user; the runner cuts the
rows into top-k lists with :func:`omega.sim.metrics.top_k`. Models are fitted on
a :class:`TrainData` (the binary users × items training matrix and the item
embeddings), which caches the expensive parts shared by a tuning grid.

- most popular: training interaction counts;
- item-kNN: cosine similarity of item columns, pruned to each history item's
  ``k`` nearest neighbours;
- EASE (Steck 2019): ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, scores ``h B``;
  with recency, ``h`` weights the j-th most recent history item by ``decay**j``;
- content: cosine between item embeddings and a recency-weighted mean of the last
  ``n`` history embeddings, optionally plus a popularity prior.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from omega.sim.metrics import hit_ndcg, top_k

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

#: Rows scored per matrix product: bounds memory at batch × items floats.
BATCH = 256


class Scorer(Protocol):
    """A fitted model: one full score row per history."""

    @property
    def n_items(self) -> int: ...

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        """``(len(histories), n_items)`` scores; higher is better."""
        ...


def recency_weights(length: int, decay: float | None, last_n: int | None = None) -> FloatArray:
    """Weights of a history of ``length`` items, oldest first.

    The j-th most recent item (j = 0 for the latest) gets ``decay**j``, or 1 when
    ``decay`` is None; items older than the last ``last_n`` get 0.
    """
    age = np.arange(length - 1, -1, -1, dtype=np.float64)
    w = np.ones(length, dtype=np.float64) if decay is None else np.power(decay, age)
    if last_n is not None:
        w[age >= last_n] = 0.0
    return w


def history_matrix(
    histories: Sequence[IntArray], n_items: int, decay: float | None = None
) -> FloatArray:
    """Dense ``(len(histories), n_items)`` matrix of (recency-weighted) histories."""
    h = np.zeros((len(histories), n_items), dtype=np.float64)
    for row, items in enumerate(histories):
        h[row, items] = recency_weights(len(items), decay)
    return h


@dataclass(eq=False)
class TrainData:
    """What the baselines are fitted on, with the shared parts computed once."""

    x: FloatArray
    """Binary users × items training matrix."""
    embeddings: Float32Array | None = None
    """``(n_items, dim)`` L2-normalized item embeddings, for the content baselines."""
    _ease: EaseSolver | None = field(default=None, repr=False)
    _knn: _NeighbourCache | None = field(default=None, repr=False)

    @property
    def n_items(self) -> int:
        return int(self.x.shape[1])

    def counts(self) -> FloatArray:
        """How many training users interacted with each item."""
        return np.asarray(self.x.sum(axis=0), dtype=np.float64)

    def ease_solver(self) -> EaseSolver:
        if self._ease is None:
            self._ease = EaseSolver(self.x)
        return self._ease

    def knn_lists(self, k: int, items: IntArray) -> tuple[IntArray, Float32Array]:
        """The ``k`` most similar items (cosine) of each of ``items``, best first.

        Rows are computed on demand and kept, so a tuning grid (ask for its
        largest k first) and a cold-start fold (a few history items) pay only
        for the rows they use.
        """
        if self._knn is None or self._knn.k < k:
            self._knn = _NeighbourCache(self.x, k)
        return self._knn.lists(items, k)


class _NeighbourCache:
    """Top-k cosine neighbours of item columns, filled row by row."""

    def __init__(self, x: FloatArray, k: int) -> None:
        n = x.shape[1]
        self.k = min(k, max(n - 1, 0))
        self._x = x.astype(np.float32)
        norm = np.sqrt(self._x.sum(axis=0))
        self._inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        self._idx = np.full((n, self.k), -1, dtype=np.int64)
        self._val = np.zeros((n, self.k), dtype=np.float32)
        self._done = np.zeros(n, dtype=bool)

    def lists(self, items: IntArray, k: int) -> tuple[IntArray, Float32Array]:
        items = np.asarray(items, dtype=np.int64)
        todo = np.unique(items[~self._done[items]])
        for lo in range(0, len(todo), 1024):
            rows = todo[lo : lo + 1024]
            sim = (self._x[:, rows].T @ self._x) * self._inv[rows, None] * self._inv[None, :]
            top = top_k(sim.astype(np.float64), [[r] for r in rows], self.k)
            self._idx[rows] = top
            vals = np.take_along_axis(sim, np.maximum(top, 0), axis=1)
            self._val[rows] = np.where(top >= 0, np.maximum(vals, 0.0), 0.0)
            self._done[rows] = True
        return self._idx[items, :k], self._val[items, :k]


# -- most popular -------------------------------------------------------------


@dataclass(eq=False)
class Popularity:
    """Training interaction counts, the same row for everyone."""

    counts: FloatArray

    @classmethod
    def fit(cls, train: TrainData) -> Popularity:
        return cls(train.counts())

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        return np.tile(self.counts, (len(histories), 1))


# -- item-kNN -------------------------------------------------------------------


@dataclass(eq=False)
class ItemKnn:
    """Item-based kNN: each history item votes for its ``neighbours`` most similar items.

    Similarity is the cosine of the training matrix's item columns; a vote
    weighs the similarity (Sarwar et al. 2001, Deshpande & Karypis 2004).
    """

    train: TrainData
    neighbours: int

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        out = np.empty((len(histories), self.n_items), dtype=np.float64)
        for row, items in enumerate(histories):
            idx, val = self.train.knn_lists(self.neighbours, items)
            keep = idx >= 0
            out[row] = np.bincount(idx[keep], weights=val[keep], minlength=self.n_items)
        return out


# -- EASE -----------------------------------------------------------------------


class EaseSolver:
    """``P(λ) = (XᵀX + λI)⁻¹`` for any λ from one eigendecomposition.

    With fewer users than items (ml-latest-small: 610 × 9,724) the dual form is
    used: ``P = (I - Xᵀ (XXᵀ + λI)⁻¹ X) / λ`` (Woodbury), so only a users × users
    matrix is decomposed and ``P`` is never formed; a 9.7k × 9.7k inverse takes
    ~40 s on this machine, the dual a fraction of a second. Otherwise the
    items × items Gram matrix is decomposed and ``P`` formed per λ.
    """

    def __init__(self, x: FloatArray) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        users, items = self.x.shape
        self.dual = users < items
        gram = self.x @ self.x.T if self.dual else self.x.T @ self.x
        self._eigval, self._eigvec = np.linalg.eigh(gram)
        self._eigval = np.maximum(self._eigval, 0.0)  # PSD; clip rounding below zero

    def at(self, lam: float) -> EaseModel:
        if not lam > 0:
            raise ValueError(f"EASE λ must be positive, got {lam}")
        v, w = self._eigvec, self._eigval
        inv = (v / (w + lam)) @ v.T
        if self.dual:
            kx = inv @ self.x
            diag = (1.0 - np.einsum("ui,ui->i", self.x, kx)) / lam
            return EaseModel(lam, diag, dual_x=self.x, dual_kx=kx)
        return EaseModel(lam, np.diag(inv).copy(), p=inv)


@dataclass(eq=False)
class EaseModel:
    """``P`` for one λ, held either explicitly or through the dual factors."""

    lam: float
    diag: FloatArray
    p: FloatArray | None = None
    dual_x: FloatArray | None = None
    dual_kx: FloatArray | None = None

    def apply(self, h: FloatArray) -> FloatArray:
        """``h @ P`` for a batch of rows ``h``."""
        if self.p is not None:
            return h @ self.p
        assert self.dual_x is not None and self.dual_kx is not None
        return (h - (h @ self.dual_x.T) @ self.dual_kx) / self.lam


@dataclass(eq=False)
class Ease:
    """EASE scores ``h B`` with ``B = I - P diag(P)⁻¹`` (zero diagonal).

    For an item j outside the history, ``(h B)_j = -(h P)_j / P_jj``; history
    items are excluded from every list, so their scores do not matter.
    """

    model: EaseModel
    decay: float | None = None

    @property
    def n_items(self) -> int:
        return len(self.model.diag)

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        out = np.empty((len(histories), self.n_items), dtype=np.float64)
        for lo in range(0, len(histories), BATCH):
            h = history_matrix(histories[lo : lo + BATCH], self.n_items, self.decay)
            out[lo : lo + len(h)] = -self.model.apply(h) / self.model.diag
        return out


# -- content --------------------------------------------------------------------


@dataclass(eq=False)
class ContentProfile:
    """Cosine to a recency-weighted mean of the last ``last_n`` history embeddings.

    With ``popularity > 0`` adds ``popularity * log1p(count) / log1p(max count)``.
    """

    embeddings: Float32Array
    last_n: int
    decay: float | None = 0.9
    popularity: float = 0.0
    counts: FloatArray | None = None

    @property
    def n_items(self) -> int:
        return int(self.embeddings.shape[0])

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        e = self.embeddings
        profiles = np.zeros((len(histories), e.shape[1]), dtype=np.float64)
        for row, items in enumerate(histories):
            w = recency_weights(len(items), self.decay, self.last_n)
            profiles[row] = w @ e[items]
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        profiles = np.divide(profiles, norms, out=np.zeros_like(profiles), where=norms > 0)
        out: FloatArray = profiles @ e.T.astype(np.float64)
        if self.popularity > 0.0:
            if self.counts is None:
                raise ValueError("a popularity weight needs item counts")
            top = np.log1p(self.counts.max()) if self.counts.size else 0.0
            prior = np.log1p(self.counts) / top if top > 0 else np.zeros_like(self.counts)
            out += self.popularity * prior
        return out


# -- the benchmark's baselines, tuning and cold-start folds ---------------------------

Params = dict[str, float | int]


@dataclass(frozen=True)
class Baseline:
    """A baseline as the runner sees it: a name, a tuning grid and a builder."""

    name: str
    grid: tuple[Params, ...]
    """Parameter sets tried on validation, in order (ties keep the earlier one)."""
    build: Callable[[TrainData, Params], Scorer]
    needs_embeddings: bool = False


def default_baselines(
    *,
    decay: float,
    ease_lambdas: Sequence[float],
    knn_neighbours: Sequence[int],
    content_last_n: Sequence[int],
    content_popularity: Sequence[float],
) -> list[Baseline]:
    """The baselines of BENCHMARKS.md §1 plus EASE with recency weighting."""

    def ease(train: TrainData, p: Params) -> Scorer:
        return Ease(train.ease_solver().at(float(p["lambda"])), p.get("decay"))

    def content(train: TrainData, p: Params) -> Scorer:
        if train.embeddings is None:
            raise ValueError("the content baselines need item embeddings")
        return ContentProfile(
            train.embeddings,
            int(p["last_n"]),
            float(p["decay"]),
            float(p.get("popularity", 0.0)),
            train.counts(),
        )

    return [
        Baseline("most popular", ({},), lambda train, p: Popularity.fit(train)),
        Baseline(
            "item-kNN",
            # Largest first: the neighbour lists are computed once, for the largest k.
            tuple({"k": k} for k in sorted(knn_neighbours, reverse=True)),
            lambda train, p: ItemKnn(train, int(p["k"])),
        ),
        Baseline("EASE", tuple({"lambda": lam} for lam in ease_lambdas), ease),
        Baseline(
            "EASE + recency",
            tuple({"lambda": lam, "decay": decay} for lam in ease_lambdas),
            ease,
        ),
        Baseline(
            "content",
            tuple({"last_n": n, "decay": decay} for n in content_last_n),
            content,
            needs_embeddings=True,
        ),
        Baseline(
            "content + popularity",
            tuple(
                {"last_n": n, "decay": decay, "popularity": b}
                for n in content_last_n
                for b in content_popularity
            ),
            content,
            needs_embeddings=True,
        ),
    ]


def rank(scorer: Scorer, histories: Sequence[IntArray], k: int) -> IntArray:
    """Top-k lists of ``scorer`` for ``histories``, each excluding its own history."""
    out = np.full((len(histories), k), -1, dtype=np.int64)
    for lo in range(0, len(histories), BATCH):
        part = histories[lo : lo + BATCH]
        out[lo : lo + len(part)] = top_k(scorer.scores(part), part, k)
    return out


@dataclass(frozen=True)
class Tuned:
    """The chosen parameters of a baseline and its validation figures."""

    params: Params
    val_hr: float
    val_ndcg: float
    scorer: Scorer
    tried: tuple[tuple[Params, float, float], ...]
    """(params, HR, NDCG) of every grid point, on validation."""


def tune(
    baseline: Baseline,
    train: TrainData,
    histories: Sequence[IntArray],
    targets: npt.ArrayLike,
    k: int,
) -> Tuned:
    """Pick the grid point with the best validation NDCG@k (the earlier one on a tie)."""
    best: Tuned | None = None
    tried: list[tuple[Params, float, float]] = []
    for params in baseline.grid:
        scorer = baseline.build(train, params)
        hit, ndcg = hit_ndcg(rank(scorer, histories, k), targets)
        hr, nd = float(hit.mean()), float(ndcg.mean())
        tried.append((params, hr, nd))
        if best is None or nd > best.val_ndcg:
            best = Tuned(params, hr, nd, scorer, ())
    if best is None:
        raise ValueError(f"{baseline.name}: empty tuning grid")
    return Tuned(best.params, best.val_hr, best.val_ndcg, best.scorer, tuple(tried))


def cold_start_lists(
    baseline: Baseline,
    params: Params,
    x: FloatArray,
    embeddings: Float32Array | None,
    rows: Sequence[int],
    histories: Sequence[IntArray],
    k: int,
    folds: int,
) -> IntArray:
    """Top-k lists for cold-start histories, each from a model fitted without that user.

    The cold-start target (a user's 6th interaction) is in that user's own
    training history, so a model fitted on every training history has seen it.
    Users (``rows`` of ``x``) are split into ``folds`` folds by position; each
    fold is scored by a model fitted on the other folds' training histories.
    """
    if len(rows) != len(histories):
        raise ValueError(f"{len(rows)} rows for {len(histories)} histories")
    out = np.full((len(rows), k), -1, dtype=np.int64)
    row_arr = np.asarray(rows, dtype=np.int64)
    position = np.arange(len(row_arr))
    for fold in range(min(folds, len(row_arr))):
        mine = position % folds == fold
        keep = np.ones(x.shape[0], dtype=bool)
        keep[row_arr[mine]] = False
        scorer = baseline.build(TrainData(x[keep], embeddings), params)
        picked = [histories[int(i)] for i in np.flatnonzero(mine)]
        out[mine] = rank(scorer, picked, k)
    return out
