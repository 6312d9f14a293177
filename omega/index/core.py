"""``IndexCore``: what every ``VectorIndex`` implementation shares.

So both implementations behave the same (the conformance suite in
tests/unit/test_index_conformance.py checks it):

- validation of every argument before any change (``omega.index.interface``);
- replacing: adding an id that is present replaces its vector and value, and the
  entry counts as the newest;
- eviction: when an ``add`` would go beyond capacity, the entries with the lowest
  value go first (ties: the oldest), whether stored before or offered in this
  call; ``add`` returns the evicted ids, lowest first;
- saving and loading through ``omega.index.fileformat``.
"""

from __future__ import annotations

import heapq
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from omega.index.errors import IndexFileError, InvalidArgument
from omega.index.fileformat import (
    FORMAT_VERSION,
    check_ledger,
    check_unit_rows,
    read_index_file,
    write_index_file,
)
from omega.index.interface import (
    F32,
    F64,
    I64,
    check_ids,
    check_k,
    check_values,
    check_vectors,
)
from omega.index.settings import DEFAULT_CAPACITY, IndexSettings

__all__ = ["F32", "I64", "IndexCore", "check_unit_rows"]

log = logging.getLogger("omega.index")


class IndexCore(ABC):
    """Bookkeeping (values, ages, eviction), validation and the file format.

    Subclasses store the vectors and search them; they receive only validated,
    normalized input, and ids that are (``_put``) absent or (``_drop``) present.
    """

    KIND: ClassVar[str]

    def __init__(self, dim: int = 384, capacity: int = DEFAULT_CAPACITY,
                 settings: IndexSettings | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65_536:
            raise InvalidArgument(f"dim must be an integer 1-65536, got {dim!r}")
        if (isinstance(capacity, bool) or not isinstance(capacity, int)
                or not 1 <= capacity <= 1 << 40):
            raise InvalidArgument(f"capacity must be a positive integer, got {capacity!r}")
        self._dim = dim
        self._capacity = capacity
        self._settings = settings if settings is not None else IndexSettings()
        # id -> (value, sequence number); the sequence orders ages (higher = newer).
        self._entries: dict[int, tuple[float, int]] = {}
        # Min-heap of (value, seq, id); an item is stale when it no longer matches _entries.
        self._heap: list[tuple[float, int, int]] = []
        self._next_seq = 0

    # -- storage hooks ----------------------------------------------------------------

    @abstractmethod
    def _put(self, ids: I64, vectors: F32) -> None:
        """Store entries whose ids are absent (vectors unit, float32)."""

    @abstractmethod
    def _drop(self, ids: I64) -> None:
        """Delete entries whose ids are present."""

    @abstractmethod
    def _knn(self, queries: F32, k: int) -> tuple[F32, I64]:
        """Top-k of unit queries, 1 <= k <= len(self); ids may hold -1 where none found."""

    @abstractmethod
    def _vectors_of(self, ids: I64) -> F32:
        """Stored vectors of present ids."""

    @abstractmethod
    def _payload(self, ids: I64) -> dict[str, np.ndarray[Any, Any]]:
        """Arrays to save besides the ledger, aligned with ``ids`` where per entry."""

    @abstractmethod
    def _restore(self, arrays: Mapping[str, np.ndarray[Any, Any]], ids: I64) -> None:
        """Rebuild storage from saved arrays; raise ValueError when they do not fit."""

    def _after_change(self) -> None:  # noqa: B027 - an optional hook
        """Called at the end of every add/remove (housekeeping such as rebuilds)."""

    @classmethod
    def _settings_from_file(cls, arrays: Mapping[str, np.ndarray[Any, Any]]) -> IndexSettings:
        return IndexSettings()

    # -- properties ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def settings(self) -> IndexSettings:
        return self._settings

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id_: object) -> bool:
        if isinstance(id_, bool) or not isinstance(id_, int | np.integer):
            return False
        return int(id_) in self._entries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self._dim}, capacity={self._capacity}, len={len(self)})"

    def ids(self) -> I64:
        return np.fromiter(sorted(self._entries), dtype=np.int64, count=len(self._entries))

    # -- mutation -----------------------------------------------------------------------

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike,
            values: npt.ArrayLike | None = None) -> I64:
        new_ids = check_ids(ids)
        n = int(new_ids.size)
        vecs = check_vectors(vectors, self._dim, n)
        vals = check_values(values, n)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        # Nothing below can refuse the input: from here on the index changes.
        replaced = np.asarray([i for i in new_ids.tolist() if i in self._entries],
                              dtype=np.int64)
        if replaced.size:
            self._forget(replaced)
            self._drop(replaced)
        seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        self._next_seq += n
        overflow = len(self._entries) + n - self._capacity
        evicted: list[int] = []
        keep = np.ones(n, dtype=bool)
        if overflow > 0:
            evicted, old, offered = self._choose_victims(overflow, new_ids, vals, seqs)
            if old:
                old_ids = np.asarray(old, dtype=np.int64)
                self._forget(old_ids)
                self._drop(old_ids)
            keep[offered] = False
        if keep.any():
            kept_ids = new_ids[keep]
            self._put(kept_ids, vecs[keep])
            for i, v, s in zip(kept_ids.tolist(), vals[keep].tolist(), seqs[keep].tolist(),
                               strict=True):
                self._entries[i] = (v, s)
                heapq.heappush(self._heap, (v, s, i))
        self._after_change()
        if evicted:
            log.debug("evicted entries", extra={"fields": {"count": len(evicted)}})
        return np.asarray(evicted, dtype=np.int64)

    def remove(self, ids: npt.ArrayLike) -> int:
        gone = check_ids(ids, unique=False)
        present = np.asarray(sorted({i for i in gone.tolist() if i in self._entries}),
                             dtype=np.int64)
        if present.size:
            self._forget(present)
            self._drop(present)
            self._after_change()
        return int(present.size)

    def get_values(self, ids: npt.ArrayLike) -> F64:
        arr = self._known(ids)
        return np.asarray([self._entries[i][0] for i in arr.tolist()], dtype=np.float64)

    def set_values(self, ids: npt.ArrayLike, values: npt.ArrayLike) -> None:
        arr = self._known(ids, unique=True)
        vals = check_values(values, int(arr.size))
        for i, v in zip(arr.tolist(), vals.tolist(), strict=True):
            seq = self._entries[i][1]
            self._entries[i] = (v, seq)
            heapq.heappush(self._heap, (v, seq, i))
        self._compact_heap()

    def get_vectors(self, ids: npt.ArrayLike) -> F32:
        arr = self._known(ids)
        if arr.size == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        return self._vectors_of(arr)

    # -- search -------------------------------------------------------------------------

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[F32, I64]:
        k = check_k(k)
        q = check_vectors(queries, self._dim, what="queries")
        nq = int(q.shape[0])
        kk = min(k, len(self._entries))
        if nq and kk:
            found_scores, found_ids = self._knn(q, kk)
            found_scores[found_ids < 0] = -np.inf
            if kk == k:
                return found_scores, found_ids
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        if nq and kk:
            scores[:, :kk] = found_scores
            ids[:, :kk] = found_ids
        return scores, ids

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        ids = self.ids()
        arrays: dict[str, np.ndarray[Any, Any]] = {
            "format": np.asarray([FORMAT_VERSION], dtype=np.int64),
            "kind": np.asarray([self.KIND]),
            "header": np.asarray([self._dim, self._capacity, self._next_seq], dtype=np.int64),
            "ids": ids,
            "values": np.asarray([self._entries[i][0] for i in ids.tolist()], dtype=np.float64),
            "seqs": np.asarray([self._entries[i][1] for i in ids.tolist()], dtype=np.int64),
        }
        for name, arr in self._payload(ids).items():
            arrays[f"x_{name}"] = arr
        write_index_file(Path(path), arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], settings: IndexSettings | None = None) -> Self:
        where = str(path)
        arrays = read_index_file(where)
        try:
            header, ids, values, seqs = check_ledger(arrays, cls.KIND)
            dim, capacity, next_seq = (int(x) for x in header)
            index = cls(dim=dim, capacity=capacity,
                        settings=settings if settings is not None
                        else cls._settings_from_file(arrays))
            extra = {name[2:]: arr for name, arr in arrays.items() if name.startswith("x_")}
            index._restore(extra, ids)
        except (ValueError, InvalidArgument) as exc:
            raise IndexFileError(where, f"not a valid {cls.KIND} index: {exc}") from None
        index._next_seq = next_seq
        for i, v, s in zip(ids.tolist(), values.tolist(), seqs.tolist(), strict=True):
            index._entries[i] = (v, s)
        index._heap = [(v, s, i) for i, (v, s) in index._entries.items()]
        heapq.heapify(index._heap)
        index._after_change()
        return index

    # -- internals ----------------------------------------------------------------------

    def _known(self, ids: npt.ArrayLike, *, unique: bool = False) -> I64:
        arr = check_ids(ids, unique=unique)
        missing = [i for i in arr.tolist() if i not in self._entries]
        if missing:
            raise InvalidArgument(f"unknown ids: {missing[:10]}")
        return arr

    def _forget(self, ids: I64) -> None:
        for i in ids.tolist():
            del self._entries[i]
        self._compact_heap()

    def _compact_heap(self) -> None:
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(v, s, i) for i, (v, s) in self._entries.items()]
            heapq.heapify(self._heap)

    def _choose_victims(self, count: int, ids: I64, vals: F64,
                        seqs: I64) -> tuple[list[int], list[int], list[int]]:
        """The ``count`` lowest (value, seq) among stored entries and the offered ones.

        Offered entries are always newer than stored ones, so on equal values a
        stored entry goes first. Returns (all victim ids lowest first, stored
        victim ids, positions of offered victims).
        """
        offer = np.lexsort((seqs, vals)).tolist()
        j = 0
        victims: list[int] = []
        old: list[int] = []
        offered: list[int] = []
        chosen: set[int] = set()
        while len(victims) < count:
            top = self._valid_heap_top(chosen)
            cand = (float(vals[offer[j]]), int(seqs[offer[j]])) if j < len(offer) else None
            if top is not None and (cand is None or (top[0], top[1]) <= cand):
                heapq.heappop(self._heap)
                chosen.add(top[2])
                old.append(top[2])
                victims.append(top[2])
            else:
                offered.append(offer[j])
                victims.append(int(ids[offer[j]]))
                j += 1
        return victims, old, offered

    def _valid_heap_top(self, chosen: set[int]) -> tuple[float, int, int] | None:
        while self._heap:
            v, s, i = self._heap[0]
            # Stale items (value changed, entry gone) and duplicates of a chosen
            # victim (set_values can push the same item twice) are dropped here.
            if i not in chosen and self._entries.get(i) == (v, s):
                return v, s, i
            heapq.heappop(self._heap)
        return None
