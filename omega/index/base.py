"""The ``VectorIndex`` port and what every implementation shares.

An index holds at most ``capacity`` entries; each entry is an int64 id, a unit
vector and a value (a float, e.g. a pattern's success-weighted score). Scores
are inner products of unit vectors, i.e. cosines.

Shared here, so both implementations behave the same (the conformance suite in
tests/unit/test_index_conformance.py checks it):

- validation, all before any change: ids are non-negative int64 and unique in
  one call; vectors are ``(n, dim)``, finite and not (almost) zero; values are
  finite; ``k >= 1``. Vectors and queries are **normalized**, not rejected, when
  their norm is not 1: wire vectors arrive as float16 and profile keys are means,
  so "almost unit" is normal, and the cosine is what every caller means;
- replacing: adding an id that is present replaces its vector and value, and the
  entry counts as the newest;
- eviction: when an ``add`` would go beyond capacity, the entries with the lowest
  value go first (ties: the oldest), whether stored before or offered in this
  call; ``add`` returns the evicted ids, lowest first;
- the file format (one ``.npz`` with a sha256 over its arrays, written to a
  temporary file and renamed) and its validation on load.

Thread-safety: none. An index is owned by one actor (one thread); concurrent
calls, even a search beside an add, must be serialized by the caller.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import os
import secrets
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from omega.index.errors import (
    DimensionMismatch,
    IndexFileError,
    InvalidArgument,
    InvalidVector,
)
from omega.index.settings import DEFAULT_CAPACITY, IndexSettings

__all__ = [
    "F32",
    "F64",
    "FORMAT_VERSION",
    "I64",
    "IndexCore",
    "VectorIndex",
    "check_ids",
    "check_k",
    "check_unit_rows",
    "check_values",
    "check_vectors",
]

log = logging.getLogger("omega.index")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

FORMAT_VERSION = 1
#: A vector shorter than this has no direction worth keeping.
MIN_NORM = 1e-6
#: Saved vectors must be this close to unit length.
NORM_TOLERANCE = 1e-3
_EMPTY_IDS: I64 = np.zeros(0, dtype=np.int64)


@runtime_checkable
class VectorIndex(Protocol):
    """docs/CONTRACTS.md: an id-mapped, capacity-bounded index of unit vectors."""

    @property
    def dim(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    def __len__(self) -> int: ...

    def __contains__(self, id_: object) -> bool: ...

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike,
            values: npt.ArrayLike | None = None) -> I64:
        """Add or replace entries; return the ids evicted to stay within capacity."""
        ...

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove the ids that are present; return how many were."""
        ...

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[F32, I64]:
        """Top-``k`` by cosine: scores ``(n, k)`` float32 best first, ids ``(n, k)`` int64,
        padded with id -1 and score -inf when fewer than ``k`` entries are found."""
        ...

    def ids(self) -> I64:
        """The ids present, ascending."""
        ...

    def get_values(self, ids: npt.ArrayLike) -> F64: ...

    def set_values(self, ids: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Change values in place (the entries keep their age and vectors)."""
        ...

    def get_vectors(self, ids: npt.ArrayLike) -> F32:
        """The stored (unit) vectors of ``ids``, ``(n, dim)`` float32."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically (temporary file, fsync, rename)."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike[str], settings: IndexSettings | None = None) -> Self:
        """Read an index written by ``save`` of the same class; validate it whole."""
        ...


# -- validation (plain functions, shared) ------------------------------------------------


def check_ids(ids: npt.ArrayLike, *, unique: bool = True) -> I64:
    """A 1-D int64 array of non-negative ids (unique unless told otherwise)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidArgument(f"ids must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return _EMPTY_IDS
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgument(f"ids must be integers, got {arr.dtype}")
    if np.issubdtype(arr.dtype, np.unsignedinteger) and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidArgument("ids must fit in int64")
    out = arr.astype(np.int64)
    if int(out.min()) < 0:
        raise InvalidArgument("ids must be >= 0 (-1 marks an empty search slot)")
    if unique and np.unique(out).size != out.size:
        raise InvalidArgument("ids must be unique within one call")
    return out


def check_vectors(vectors: npt.ArrayLike, dim: int, n: int | None = None,
                  *, what: str = "vectors") -> F32:
    """A new float32 ``(n, dim)`` array with unit rows; 1-D input is one row."""
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be a numeric array: {exc}") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgument(f"{what} must be (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionMismatch(dim, int(arr.shape[1]))
    if n is not None and arr.shape[0] != n:
        raise InvalidArgument(f"{what}: {arr.shape[0]} rows for {n} ids")
    if arr.dtype == np.float32:
        # Fast paths (every query): NaN or inf anywhere makes the norm non-finite.
        # A float32 overflow only sends the input down the float64 path below.
        with np.errstate(over="ignore", invalid="ignore"):
            if arr.shape[0] == 1:
                sq = float(arr[0] @ arr[0])
                if MIN_NORM * MIN_NORM <= sq < math.inf:
                    one: F32 = (arr / np.float32(math.sqrt(sq))).astype(np.float32, copy=False)
                    return one
            norms32 = np.sqrt(np.einsum("ij,ij->i", arr, arr))
            if np.isfinite(norms32).all() and (norms32.size == 0 or norms32.min() >= MIN_NORM):
                fast: F32 = arr / norms32[:, None]
                return fast
    elif arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating)
                                       or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidArgument(f"{what} must be real numbers, got {arr.dtype}")
    # float64 for the norm so float16 wire vectors and large values do not overflow.
    wide = arr.astype(np.float64)
    if not np.isfinite(wide).all():
        raise InvalidVector(f"{what} hold NaN or infinity")
    norms = np.linalg.norm(wide, axis=1)
    if norms.size and float(norms.min()) < MIN_NORM:
        row = int(np.argmin(norms))
        raise InvalidVector(f"{what}: row {row} has norm {norms[row]:.3g}: no direction")
    unit: F32 = (wide / norms[:, None]).astype(np.float32)
    return unit


def check_values(values: npt.ArrayLike | None, n: int, *, default: float = 0.0) -> F64:
    """A float64 ``(n,)`` array of finite values (``default`` when ``values`` is None)."""
    if values is None:
        return np.full(n, default, dtype=np.float64)
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.shape != (n,):
        raise InvalidArgument(f"values must have shape ({n},), got {arr.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating)
                                     or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidArgument(f"values must be real numbers, got {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise InvalidArgument("values must be finite")
    return out


def check_k(k: object) -> int:
    """``k`` as a positive int (booleans refused)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InvalidArgument(f"k must be an integer, got {type(k).__name__}")
    if int(k) <= 0:
        raise InvalidArgument(f"k must be >= 1, got {k}")
    return int(k)


# -- the shared core --------------------------------------------------------------------


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
            return _EMPTY_IDS.copy()
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
        target = Path(path)
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
        arrays["checksum"] = _checksum(arrays)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, allow_pickle=False, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IndexFileError(str(target), f"cannot write: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str], settings: IndexSettings | None = None) -> Self:
        where = str(path)
        arrays = _read_npz(where)
        try:
            header, ids, values, seqs = _check_ledger(arrays, cls.KIND)
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


def _checksum(arrays: Mapping[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_npz(where: str) -> dict[str, np.ndarray[Any, Any]]:
    try:
        # Our own handle: np.load leaks its file when it fails on a path.
        with open(where, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise IndexFileError(where, "no such file") from None
    # NotImplementedError: zipfile's answer to a damaged "compression method" field.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError,
            NotImplementedError) as exc:
        raise IndexFileError(where, f"unreadable: {exc}") from None
    except AttributeError:  # np.load returned a plain array: not an .npz
        raise IndexFileError(where, "not an index file") from None
    stored = arrays.get("checksum")
    if stored is None or not np.array_equal(stored, _checksum(arrays)):
        raise IndexFileError(where, "checksum mismatch: the file is damaged or not an index")
    return arrays


def _check_ledger(arrays: Mapping[str, np.ndarray[Any, Any]],
                  kind: str) -> tuple[I64, I64, F64, I64]:
    for name in ("format", "kind", "header", "ids", "values", "seqs"):
        if name not in arrays:
            raise ValueError(f"missing array {name!r}")
    fmt = arrays["format"]
    if fmt.shape != (1,) or int(fmt[0]) != FORMAT_VERSION:
        raise ValueError(f"format {fmt.tolist()}, this code reads [{FORMAT_VERSION}]")
    if arrays["kind"].shape != (1,) or str(arrays["kind"][0]) != kind:
        raise ValueError(f"file holds a {arrays['kind'].tolist()} index, not {kind!r}")
    header = arrays["header"]
    if header.shape != (3,) or header.dtype != np.int64:
        raise ValueError("bad header")
    dim, capacity, next_seq = (int(x) for x in header)
    if dim < 1 or capacity < 1 or next_seq < 0:
        raise ValueError(f"bad header {header.tolist()}")
    ids, values, seqs = arrays["ids"], arrays["values"], arrays["seqs"]
    n = int(ids.shape[0]) if ids.ndim == 1 else -1
    if (ids.dtype != np.int64 or values.dtype != np.float64 or seqs.dtype != np.int64
            or n < 0 or values.shape != (n,) or seqs.shape != (n,)):
        raise ValueError("ids, values and seqs must be aligned int64/float64/int64 arrays")
    if n > capacity:
        raise ValueError(f"{n} entries for capacity {capacity}")
    if n:
        if int(ids.min()) < 0 or np.unique(ids).size != n:
            raise ValueError("ids must be unique and >= 0")
        if not np.isfinite(values).all():
            raise ValueError("values must be finite")
        if int(seqs.min()) < 0 or int(seqs.max()) >= next_seq or np.unique(seqs).size != n:
            raise ValueError("sequence numbers must be unique and below the header's")
    return header, ids, values, seqs


def check_unit_rows(vectors: np.ndarray[Any, Any], dim: int) -> None:
    """Raise ValueError unless ``vectors`` is finite float32 (or float16, as an HNSW
    graph may store them) ``(n, dim)`` with unit rows."""
    if (vectors.ndim != 2 or vectors.shape[1] != dim
            or vectors.dtype not in (np.float32, np.float16)):
        raise ValueError(f"vectors must be float32 (n, {dim}), got {vectors.dtype} "
                         f"{vectors.shape}")
    step = 4096  # in chunks: a large catalog should not double its memory here
    for start in range(0, vectors.shape[0], step):
        chunk = vectors[start:start + step].astype(np.float64)
        if not np.isfinite(chunk).all():
            raise ValueError("vectors hold NaN or infinity")
        norms = np.linalg.norm(chunk, axis=1)
        if norms.size and float(np.abs(norms - 1.0).max()) > NORM_TOLERANCE:
            raise ValueError("vectors are not unit length")
