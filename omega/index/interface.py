"""The ``VectorIndex`` port: what an index does, and the checks of its arguments.

An index holds at most ``capacity`` entries; each entry is an int64 id, a unit
vector and a value (a float, e.g. a pattern's success-weighted score). Scores
are inner products of unit vectors, i.e. cosines.

Validation happens before any change: ids are non-negative int64 and unique in
one call; vectors are ``(n, dim)``, finite and not (almost) zero; values are
finite; ``k >= 1``. Vectors and queries are **normalized**, not rejected, when
their norm is not 1: wire vectors arrive as float16 and profile keys are means,
so "almost unit" is normal, and the cosine is what every caller means.

Thread-safety: none. An index is owned by one actor (one thread); concurrent
calls, even a search beside an add, must be serialized by the caller.
"""

from __future__ import annotations

import math
import os
from typing import Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from omega.index.errors import DimensionMismatch, InvalidArgument, InvalidVector
from omega.index.settings import IndexSettings

__all__ = [
    "F32",
    "F64",
    "I64",
    "MIN_NORM",
    "VectorIndex",
    "check_ids",
    "check_k",
    "check_values",
    "check_vectors",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: A vector shorter than this has no direction worth keeping.
MIN_NORM = 1e-6
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
