"""Centralized baselines of the quality benchmark, in plain numpy.

Each baseline is a :class:`Scorer`: given users' time-ordered histories (catalog
indices, oldest first) it returns a full score row per user; the runner cuts the
rows into top-k lists with :func:`omega.sim.metrics.top_k`. Models are fitted on
a :class:`TrainData` (the binary users × items training matrix and the item
embeddings), which caches the expensive parts shared by a tuning grid.

- most popular: training interaction counts;
- item-kNN: cosine similarity of item columns, optionally pruned to each
  history item's ``k`` nearest neighbours;
- EASE (Steck 2019): ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, scores ``h B``;
  with recency, ``h`` weights the j-th most recent history item by ``decay**j``;
- content: cosine between item embeddings and a recency-weighted mean of the last
  ``n`` history embeddings, optionally plus a popularity prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

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
    _knn: dict[int, tuple[IntArray, Float32Array]] = field(default_factory=dict, repr=False)

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

    def knn_lists(self, k: int) -> tuple[IntArray, Float32Array]:
        """Each item's ``k`` most similar items (cosine), best first; computed once for the largest k."""
        for kmax, (idx, val) in self._knn.items():
            if kmax >= k:
                return idx[:, :k], val[:, :k]
        self._knn = {k: _cosine_neighbours(self.x, k)}
        return self._knn[k]


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
    """Item-based kNN on cosine similarity of the training matrix's columns.

    ``neighbours=None`` uses every item's full similarity row, computed through
    ``X`` without forming the items × items matrix.
    """

    train: TrainData
    neighbours: int | None = None

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        x = self.train.x
        norm = np.sqrt(self.train.counts())
        inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        out = np.empty((len(histories), self.n_items), dtype=np.float64)
        if self.neighbours is None:
            for lo in range(0, len(histories), BATCH):
                h = history_matrix(histories[lo : lo + BATCH], self.n_items) * inv
                s = (h @ x.T) @ x * inv
                out[lo : lo + len(h)] = s - h * norm  # drop each item's similarity to itself
            return out
        idx, val = self.train.knn_lists(self.neighbours)
        for row, items in enumerate(histories):
            out[row] = np.bincount(
                idx[items].ravel(), weights=val[items].ravel(), minlength=self.n_items
            )
        return out


def _cosine_neighbours(x: FloatArray, k: int, chunk: int = 1024) -> tuple[IntArray, Float32Array]:
    """Top-k cosine neighbours of every item column of ``x`` (self excluded)."""
    n = x.shape[1]
    k = min(k, max(n - 1, 0))
    xf = x.astype(np.float32)
    norm = np.sqrt(xf.sum(axis=0))
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    idx = np.zeros((n, k), dtype=np.int64)
    val = np.zeros((n, k), dtype=np.float32)
    if k == 0:
        return idx, val
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        sim = (xf[:, lo:hi].T @ xf) * inv[lo:hi, None] * inv[None, :]
        sim[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, part, axis=1)
        order = np.lexsort((part, -top), axis=1)
        idx[lo:hi] = np.take_along_axis(part, order, axis=1)
        val[lo:hi] = np.maximum(np.take_along_axis(top, order, axis=1), 0.0)
    return idx, val


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
        out = profiles @ e.T.astype(np.float64)
        if self.popularity > 0.0:
            if self.counts is None:
                raise ValueError("a popularity weight needs item counts")
            top = np.log1p(self.counts.max()) if self.counts.size else 0.0
            prior = np.log1p(self.counts) / top if top > 0 else np.zeros_like(self.counts)
            out += self.popularity * prior
        return out
