"""Vector indexes of the TV brain: the ``VectorIndex`` port, faiss HNSW and a numpy twin.

``HnswIndex`` is imported on first use, so that reading settings (``IndexSettings``)
does not load faiss into processes that never search (shards, hubs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omega.index.brute import BruteForceIndex
from omega.index.errors import (
    DimensionMismatch,
    IndexFileError,
    InvalidArgument,
    InvalidVector,
    VectorIndexError,
)
from omega.index.interface import VectorIndex
from omega.index.settings import DEFAULT_CAPACITY, IndexSettings

if TYPE_CHECKING:
    from omega.index.hnsw import HnswIndex

__all__ = [
    "DEFAULT_CAPACITY",
    "BruteForceIndex",
    "DimensionMismatch",
    "HnswIndex",
    "IndexFileError",
    "IndexSettings",
    "InvalidArgument",
    "InvalidVector",
    "VectorIndex",
    "VectorIndexError",
    "create_index",
]


def create_index(kind: str, dim: int, capacity: int,
                 settings: IndexSettings | None = None) -> VectorIndex:
    """A new empty index: ``kind`` is ``"hnsw"`` or ``"brute"``."""
    if kind == "hnsw":
        from omega.index.hnsw import HnswIndex

        return HnswIndex(dim=dim, capacity=capacity, settings=settings)
    if kind == "brute":
        return BruteForceIndex(dim=dim, capacity=capacity, settings=settings)
    raise InvalidArgument(f"unknown index kind {kind!r} (hnsw or brute)")


def __getattr__(name: str) -> Any:
    if name == "HnswIndex":
        from omega.index.hnsw import HnswIndex

        return HnswIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
