"""``HnswIndex``: faiss ``IndexHNSWFlat`` (inner product) with ids, values and removal.

The only module that imports faiss.

faiss's HNSW graph cannot delete a node, so removal is by **tombstone**: a
removed (or replaced, or evicted) entry's node stays in the graph, still routes
searches, but is filtered out of results by an ``IDSelectorBitmap`` of the live
nodes. When tombstones exceed ``rebuild_fraction`` of the live entries (0.25 by
default) the graph is rebuilt from the live vectors, which are read back from
faiss's own storage (no second copy is kept: 15 MB saved at 10,000 × 384).
A rebuild of 10,000 vectors takes about 0.5 s on one core here; with the
default fraction it happens at most once per 2,500 removals.

A removal followed by re-adding the same id with the same vector (how a value
update looks to an index without ``set_values``) revives the tombstone instead
of growing the graph.

Storage: float32 (``IndexHNSWFlat``) or, with ``storage = "float16"``, faiss's
``IndexHNSWSQ`` with ``QT_fp16`` codes: half the bytes fetched per visited node,
which is what an HNSW search over 10,000 × 384 waits on (measured: p50 0.20× brute
force instead of 0.26× warm, 0.33× instead of 0.37× with cold caches; recall@10
unchanged at 0.986). Scores are then the float16 vectors' (within ~1e-3).

Node numbers ("labels") are faiss's sequential positions; ``_label_id`` maps a
label to its id (-1 for a tombstone). Thread-safety: none (see ``omega.index.interface``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from omega.index.core import F32, I64, IndexCore, check_unit_rows
from omega.index.settings import DEFAULT_CAPACITY, STORAGES, IndexSettings

# faiss's loader first tries its AVX512 build, which the wheel does not ship, and
# logs the ModuleNotFoundError at info level on every start: not news, so hidden.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402 - after its logger is quietened

__all__ = ["HnswIndex"]

log = logging.getLogger("omega.index")


class HnswIndex(IndexCore):
    """Approximate inner-product search on an HNSW graph (``VectorIndex``)."""

    KIND: ClassVar[str] = "hnsw"

    def __init__(self, dim: int = 384, capacity: int = DEFAULT_CAPACITY,
                 settings: IndexSettings | None = None) -> None:
        super().__init__(dim, capacity, settings)
        # Process-wide in faiss; the brain runs single-threaded (BENCHMARKS.md §2).
        faiss.omp_set_num_threads(self._settings.threads)
        self._index = self._new_graph()
        self._label_id: I64 = np.zeros(0, dtype=np.int64)
        self._bitmap = np.zeros(0, dtype=np.uint8)  # bit set = live label
        self._label_of: dict[int, int] = {}
        self._tomb_of: dict[int, int] = {}  # id -> its latest dead label
        self._dead = 0
        self._params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        self._ef = -1  # the efSearch set in _params
        self._selector: Any = None
        self._filtering = False  # whether _params.sel is set
        self._rebuilds = 0

    # -- graph --------------------------------------------------------------------------

    def _new_graph(self) -> Any:
        s = self._settings
        index: Any
        if s.storage == "float16":
            index = faiss.IndexHNSWSQ(self._dim, faiss.ScalarQuantizer.QT_fp16,  # type: ignore[arg-type]
                                      s.m, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWFlat(self._dim, s.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self._settings.ef_construction
        index.hnsw.efSearch = self._settings.ef_search
        return index

    def _storage(self) -> np.ndarray[Any, Any]:
        """A no-copy view of faiss's vectors (float32 or float16, as stored); valid
        until the next add."""
        n = int(self._index.ntotal)
        half = self._settings.storage == "float16"
        if n == 0:
            return np.zeros((0, self._dim), dtype=np.float16 if half else np.float32)
        store = faiss.downcast_index(self._index.storage)
        if half:
            codes = store.codes  # type: ignore[attr-defined]
            raw = faiss.rev_swig_ptr(codes.data(), n * self._dim * 2)
            half_view: np.ndarray[Any, Any] = raw.view(np.float16).reshape(n, self._dim)
            return half_view
        xb = store.get_xb()  # type: ignore[attr-defined]
        view: F32 = faiss.rev_swig_ptr(xb, n * self._dim).reshape(n, self._dim)
        return view

    def _grow_labels(self, total: int) -> None:
        # One spare slot at the end, always -1: faiss's "not found" label -1 then
        # maps to id -1 with a plain lookup.
        if total + 1 > self._label_id.size:
            size = max(total + 1, 2 * self._label_id.size, 64)
            label_id = np.full(size, -1, dtype=np.int64)
            label_id[: self._label_id.size] = self._label_id
            self._label_id = label_id
        need = (total + 7) // 8
        if need > self._bitmap.size:
            bitmap = np.zeros(max(need, 2 * self._bitmap.size, 8), dtype=np.uint8)
            bitmap[: self._bitmap.size] = self._bitmap
            self._bitmap = bitmap
            self._drop_selector()  # it points at the old buffer

    def _drop_selector(self) -> None:
        # Unset it in the search parameters first: they hold a bare C++ pointer.
        self._params.sel = None
        self._filtering = False
        self._selector = None

    def _set_live(self, labels: I64, live: bool) -> None:
        bytes_, bits = labels >> 3, (labels & 7).astype(np.uint8)
        masks = np.left_shift(np.uint8(1), bits)
        if live:
            np.bitwise_or.at(self._bitmap, bytes_, masks)
        else:
            np.bitwise_and.at(self._bitmap, bytes_, np.invert(masks))

    # -- storage hooks ------------------------------------------------------------------

    def _put(self, ids: I64, vectors: F32) -> None:
        fresh = np.ones(ids.size, dtype=bool)
        if self._tomb_of:
            store = self._storage()
            for j, i in enumerate(ids.tolist()):
                label = self._tomb_of.get(i)
                if label is not None and np.array_equal(store[label],
                                                        vectors[j].astype(store.dtype)):
                    del self._tomb_of[i]
                    self._revive(i, label)
                    fresh[j] = False
        if not fresh.any():
            return
        new_ids = ids[fresh]
        start = int(self._index.ntotal)
        self._index.add(np.ascontiguousarray(vectors[fresh]))
        labels = np.arange(start, start + new_ids.size, dtype=np.int64)
        self._grow_labels(start + new_ids.size)
        self._label_id[labels] = new_ids
        self._set_live(labels, True)
        for i, label in zip(new_ids.tolist(), labels.tolist(), strict=True):
            self._label_of[i] = label
            self._tomb_of.pop(i, None)

    def _revive(self, id_: int, label: int) -> None:
        self._label_id[label] = id_
        self._set_live(np.asarray([label], dtype=np.int64), True)
        self._label_of[id_] = label
        self._dead -= 1

    def _drop(self, ids: I64) -> None:
        labels = np.asarray([self._label_of.pop(i) for i in ids.tolist()], dtype=np.int64)
        self._label_id[labels] = -1
        self._set_live(labels, False)
        for i, label in zip(ids.tolist(), labels.tolist(), strict=True):
            self._tomb_of[i] = label
        self._dead += int(labels.size)

    def _after_change(self) -> None:
        if self._dead > self._settings.rebuild_fraction * max(len(self), 1):
            self._rebuild()

    def _rebuild(self) -> None:
        started = time.monotonic()
        dead = self._dead
        live = np.flatnonzero(self._label_id[: self._index.ntotal] >= 0)
        vectors = self._storage()[live].astype(np.float32)  # float16 round-trips exactly
        ids = self._label_id[live].copy()
        self._index = self._new_graph()
        self._label_id = np.zeros(0, dtype=np.int64)
        self._bitmap = np.zeros(0, dtype=np.uint8)
        self._drop_selector()
        self._label_of.clear()
        self._tomb_of.clear()
        self._dead = 0
        if ids.size:
            self._put(ids, vectors)
        self._rebuilds += 1
        log.info("rebuilt HNSW graph", extra={"fields": {
            "live": int(ids.size), "tombstones": dead,
            "seconds": round(time.monotonic() - started, 3)}})

    def _knn(self, queries: F32, k: int) -> tuple[F32, I64]:
        params = self._params
        ef = max(self._settings.ef_search, k)
        if ef != self._ef:  # faiss's Python setattr hook costs more than the check
            params.efSearch = self._ef = ef
        if self._dead:
            if self._selector is None:
                self._selector = faiss.IDSelectorBitmap(
                    int(self._bitmap.size) * 8, faiss.swig_ptr(self._bitmap))
            if not self._filtering:
                params.sel = self._selector
                self._filtering = True
        elif self._filtering:
            params.sel = None
            self._filtering = False
        # Named, so the array outlives the bare pointer handed to faiss.
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n = q.shape[0]
        scores = np.empty((n, k), dtype=np.float32)
        labels = np.empty((n, k), dtype=np.int64)
        # search_c skips the Python wrapper's copies and checks (done in base).
        self._index.search_c(n, faiss.swig_ptr(q), k, faiss.swig_ptr(scores),
                             faiss.swig_ptr(labels), params)
        ids: I64 = self._label_id[labels]
        return scores, ids

    def _vectors_of(self, ids: I64) -> F32:
        labels = np.asarray([self._label_of[i] for i in ids.tolist()], dtype=np.int64)
        out: F32 = self._storage()[labels].astype(np.float32)
        return out

    # -- persistence --------------------------------------------------------------------

    def _payload(self, ids: I64) -> dict[str, np.ndarray[Any, Any]]:
        s = self._settings
        return {
            "graph": faiss.serialize_index(self._index),
            "labels": np.asarray([self._label_of[i] for i in ids.tolist()], dtype=np.int64),
            "params": np.asarray([s.m, s.ef_construction, s.ef_search, s.rebuild_fraction,
                                  s.threads, STORAGES.index(s.storage)], dtype=np.float64),
        }

    @classmethod
    def _settings_from_file(cls, arrays: Mapping[str, np.ndarray[Any, Any]]) -> IndexSettings:
        params = arrays.get("x_params")
        # Five numbers: files written before the storage setting (float32).
        if params is None or params.shape not in ((5,), (6,)) or not np.isfinite(params).all():
            raise ValueError("missing or bad HNSW parameters")
        m, efc, efs, fraction, threads, *rest = params.tolist()
        code = int(rest[0]) if rest else 0
        if not 0 <= code < len(STORAGES):
            raise ValueError(f"unknown HNSW storage code {code}")
        return IndexSettings(m=int(m), ef_construction=int(efc), ef_search=int(efs),
                             rebuild_fraction=float(fraction), threads=int(threads),
                             storage=STORAGES[code])

    def _restore(self, arrays: Mapping[str, np.ndarray[Any, Any]], ids: I64) -> None:
        graph, labels = arrays.get("graph"), arrays.get("labels")
        if graph is None or labels is None:
            raise ValueError("missing the HNSW graph or its labels")
        if graph.dtype != np.uint8 or graph.ndim != 1:
            raise ValueError("the HNSW graph must be a byte array")
        index: Any
        try:
            index = faiss.deserialize_index(graph)
        except RuntimeError as exc:
            raise ValueError(f"faiss cannot read the graph: {str(exc).splitlines()[0]}") from None
        if self._settings.storage == "float16":
            store: Any = faiss.downcast_index(index.storage) if isinstance(
                index, faiss.IndexHNSWSQ) else None
            if store is None or store.sq.qtype != faiss.ScalarQuantizer.QT_fp16:
                raise ValueError(f"the graph is a {type(index).__name__}, not a float16 "
                                 "IndexHNSWSQ (storage = float16)")
        elif not isinstance(index, faiss.IndexHNSWFlat):
            raise ValueError(f"the graph is a {type(index).__name__}, not IndexHNSWFlat")
        if index.d != self._dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"the graph has {index.d} dimensions / metric {index.metric_type}")
        total = int(index.ntotal)
        if labels.dtype != np.int64 or labels.shape != ids.shape:
            raise ValueError("labels must be int64, one per id")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= total
                            or np.unique(labels).size != labels.size):
            raise ValueError("labels must be unique graph positions")
        index.hnsw.efSearch = self._settings.ef_search
        self._index = index
        # Every stored vector, tombstones too, was written unit length by us.
        check_unit_rows(self._storage(), self._dim)
        self._grow_labels(total)
        self._label_id[labels] = ids
        self._set_live(labels, True)
        self._label_of = dict(zip(ids.tolist(), labels.tolist(), strict=True))
        self._dead = total - int(ids.size)

    # -- introspection (benchmarks, tests) -------------------------------------------------

    @property
    def tombstones(self) -> int:
        """Removed entries whose nodes are still in the graph."""
        return self._dead

    @property
    def rebuilds(self) -> int:
        """Graph rebuilds since this object was made."""
        return self._rebuilds
