"""``BruteForceIndex``: exact search in numpy, the reference the HNSW index is measured by.

Vectors live in one growing float32 matrix; a removal moves the last row into
the hole, so the matrix stays dense and a search is one matrix product.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from omega.index.core import F32, I64, IndexCore, check_unit_rows
from omega.index.settings import DEFAULT_CAPACITY, IndexSettings

__all__ = ["BruteForceIndex"]


class BruteForceIndex(IndexCore):
    """Exact inner-product search over every stored vector (``VectorIndex``)."""

    KIND: ClassVar[str] = "brute"

    def __init__(self, dim: int = 384, capacity: int = DEFAULT_CAPACITY,
                 settings: IndexSettings | None = None) -> None:
        super().__init__(dim, capacity, settings)
        self._vecs: F32 = np.zeros((0, dim), dtype=np.float32)
        self._row_ids: I64 = np.zeros(0, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._n = 0

    def _grow(self, need: int) -> None:
        if need <= self._vecs.shape[0]:
            return
        size = max(need, min(2 * self._vecs.shape[0], self._capacity), 16)
        vecs = np.zeros((size, self._dim), dtype=np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        row_ids = np.full(size, -1, dtype=np.int64)
        row_ids[: self._n] = self._row_ids[: self._n]
        self._vecs, self._row_ids = vecs, row_ids

    def _put(self, ids: I64, vectors: F32) -> None:
        m = int(ids.size)
        self._grow(self._n + m)
        self._vecs[self._n:self._n + m] = vectors
        self._row_ids[self._n:self._n + m] = ids
        for r, i in enumerate(ids.tolist(), start=self._n):
            self._row_of[i] = r
        self._n += m

    def _drop(self, ids: I64) -> None:
        for i in ids.tolist():
            r = self._row_of.pop(i)
            last = self._n - 1
            if r != last:
                moved = int(self._row_ids[last])
                self._vecs[r] = self._vecs[last]
                self._row_ids[r] = moved
                self._row_of[moved] = r
            self._row_ids[last] = -1
            self._n = last
        if self._n < self._vecs.shape[0] // 4 and self._vecs.shape[0] > 64:
            # Give memory back after large removals.
            self._vecs = self._vecs[: max(2 * self._n, 16)].copy()
            self._row_ids = self._row_ids[: self._vecs.shape[0]].copy()

    def _knn(self, queries: F32, k: int) -> tuple[F32, I64]:
        n = self._n
        sims = queries @ self._vecs[:n].T
        if k < n:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), sims.shape)
        scores = np.take_along_axis(sims, part, axis=1)
        ids = self._row_ids[part]
        # Best first; equal scores by ascending id, so results are deterministic.
        order = np.lexsort((ids, -scores), axis=1)
        return (np.take_along_axis(scores, order, axis=1).astype(np.float32),
                np.take_along_axis(ids, order, axis=1))

    def _vectors_of(self, ids: I64) -> F32:
        rows = np.asarray([self._row_of[i] for i in ids.tolist()], dtype=np.int64)
        return self._vecs[rows].copy()

    def _payload(self, ids: I64) -> dict[str, np.ndarray[Any, Any]]:
        return {"vectors": self._vectors_of(ids) if ids.size
                else np.zeros((0, self._dim), dtype=np.float32)}

    def _restore(self, arrays: Mapping[str, np.ndarray[Any, Any]], ids: I64) -> None:
        vectors = arrays.get("vectors")
        if vectors is None:
            raise ValueError("missing array 'vectors'")
        check_unit_rows(vectors, self._dim)
        if vectors.shape[0] != ids.size:
            raise ValueError(f"{vectors.shape[0]} vectors for {ids.size} ids")
        if ids.size:
            self._put(ids, np.ascontiguousarray(vectors))
