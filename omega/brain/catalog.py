"""The catalog as the recommender reads it: dense positions, arrays in RAM.

Loaded from LMDB at open and kept in step with every ``add_content``. Plain
data, no LMDB: ``omega.brain.memory`` stores, this module serves lookups.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from omega.brain.errors import UnknownContent
from omega.brain.memory import CatalogRecord

__all__ = ["Catalog", "text_hash"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def text_hash(text: str) -> str:
    """Identifies the embedded text, so an unchanged item is not embedded again."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Catalog:
    """Content ids ↔ positions, titles, genres (CSR), popularity prior, embeddings."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.records: list[CatalogRecord] = []
        self._emb = np.zeros((0, dim), dtype=np.float32)
        self.genre_names: list[str] = []
        self._genre_of: dict[str, int] = {}
        self.genre_ptr: I64 = np.zeros(1, dtype=np.int64)
        self.genre_ids: I64 = np.zeros(0, dtype=np.int64)
        self.first_genre: I64 = np.zeros(0, dtype=np.int64)
        self.meta_popularity: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, content_id: object) -> bool:
        return content_id in self.position

    @property
    def embeddings(self) -> F32:
        """(n, dim) float32, row = catalog position. A view: do not keep across writes."""
        return self._emb[: len(self.ids)]

    def vectors_of(self, content_ids: Sequence[str]) -> F32:
        """The embeddings of ``content_ids`` (a copy); ``UnknownContent`` for a missing one."""
        pos = []
        for cid in content_ids:
            p = self.position.get(cid)
            if p is None:
                raise UnknownContent(cid)
            pos.append(p)
        out: F32 = self._emb[np.asarray(pos, dtype=np.int64)].copy()
        return out

    def title(self, pos: int) -> str:
        return self.records[pos].title

    def load(self, records: list[CatalogRecord], matrix: F32) -> None:
        """Take a whole stored catalog (positions 0..n-1, ``matrix`` row = position)."""
        self.ids = [r.content_id for r in records]
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        self.records = list(records)
        self._emb = matrix
        self._reindex()

    def upsert(self, records: list[tuple[CatalogRecord, F32]]) -> None:
        """Apply stored records (new positions are appended in order) and re-index genres."""
        n_new = sum(1 for rec, _ in records if rec.idx >= len(self.ids))
        need = len(self.ids) + n_new
        if need > self._emb.shape[0]:
            grown = np.zeros((max(need, 2 * self._emb.shape[0], 64), self.dim), dtype=np.float32)
            grown[: len(self.ids)] = self._emb[: len(self.ids)]
            self._emb = grown
        for rec, vec in records:
            if rec.idx == len(self.ids):
                self.ids.append(rec.content_id)
                self.records.append(rec)
                self.position[rec.content_id] = rec.idx
            elif rec.idx < len(self.ids) and self.ids[rec.idx] == rec.content_id:
                self.records[rec.idx] = rec
            else:
                raise ValueError(f"catalog position {rec.idx} out of order for {rec.content_id!r}")
            self._emb[rec.idx] = vec
        self._reindex()

    def _reindex(self) -> None:
        ptr = [0]
        ids: list[int] = []
        first: list[int] = []
        pop = np.full(len(self.records), math.nan)
        for i, rec in enumerate(self.records):
            gids = [self._genre(g) for g in rec.genres]
            ids.extend(gids)
            ptr.append(len(ids))
            first.append(gids[0] if gids else -1)
            value = rec.metadata.get("popularity")
            if isinstance(value, int | float) and not isinstance(value, bool):
                pop[i] = float(value)
        self.genre_ptr = np.asarray(ptr, dtype=np.int64)
        self.genre_ids = np.asarray(ids, dtype=np.int64)
        self.first_genre = np.asarray(first, dtype=np.int64)
        self.meta_popularity = pop

    def _genre(self, name: str) -> int:
        key = name.strip().lower()
        gid = self._genre_of.get(key)
        if gid is None:
            gid = len(self.genre_names)
            self._genre_of[key] = gid
            self.genre_names.append(name.strip())
        return gid

    def genre_keys(self, pos: int) -> list[str]:
        """The item's genres as count keys (trimmed, lower case)."""
        return [g.strip().lower() for g in self.records[pos].genres]

    def genre_vocabulary(self) -> list[str]:
        """Count keys of every genre, in genre-id order."""
        return [g.lower() for g in self.genre_names]
