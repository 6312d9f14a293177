"""Settings of the vector indexes: the ``[brain.index]`` table (docs/embedder-and-index.md).

The dimension and the capacity are not settings here: each index is built with
its own (``HnswIndex(dim=..., capacity=..., settings=...)``), because one TV holds
a catalog index and a pattern index with different capacities.
"""

from __future__ import annotations

from dataclasses import dataclass

from omega.schema import require

__all__ = ["DEFAULT_CAPACITY", "STORAGES", "IndexSettings"]

#: Patterns a TV keeps unless told otherwise (DESIGN.md §5).
DEFAULT_CAPACITY = 10_000
#: Vector storage of the HNSW graph; the position is the code saved in index files.
STORAGES = ("float32", "float16")


@dataclass(frozen=True)
class IndexSettings:
    """HNSW parameters (faiss ``IndexHNSWFlat``) and the tombstone policy."""

    #: Graph degree: links per node per layer (2*m on the bottom layer).
    m: int = 16
    #: Candidate list while inserting; higher builds a better graph, more slowly.
    ef_construction: int = 40
    #: Candidate list while searching (raised to k when k is larger).
    ef_search: int = 32
    #: Rebuild the graph once removed-but-still-linked nodes exceed this
    #: fraction of the live entries (faiss HNSW cannot delete a node).
    rebuild_fraction: float = 0.25
    #: faiss's OpenMP threads (a process-wide setting; one is fastest on a TV).
    threads: int = 1
    #: How the graph stores the vectors: "float32" (exact scores) or "float16"
    #: (half the memory and the cache lines per visited node; scores within ~1e-3,
    #: recall@10 against exact search 0.986 vs 0.986 on MovieLens titles).
    storage: str = "float32"

    def __post_init__(self) -> None:
        require(2 <= self.m <= 128, "m", "must be 2-128")
        require(1 <= self.ef_construction <= 4096, "ef_construction", "must be 1-4096")
        require(1 <= self.ef_search <= 4096, "ef_search", "must be 1-4096")
        require(0.0 < self.rebuild_fraction <= 10.0, "rebuild_fraction", "must be in (0, 10]")
        require(1 <= self.threads <= 256, "threads", "must be 1-256")
        require(self.storage in STORAGES, "storage", f"must be one of {', '.join(STORAGES)}")
