"""The skill library: patterns (profile key → title, success rate, samples) in RAM.

Mirrors the LMDB ``patterns`` database and owns the pattern vector index (HNSW
from ``omega.index``). A view updates the pattern of the same title whose key
is within ``merge_threshold`` cosine of the current taste, or creates one; when
the library is full the index evicts the lowest-valued pattern
(``omega.brain.profile.pattern_value``). Also: ``consolidate``, a plain function
clustering patterns into the "reasoning bank".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain.memory import PatternRecord
from omega.brain.profile import pattern_value
from omega.index.interface import VectorIndex

__all__ = ["PatternChange", "SkillLibrary", "consolidate"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PatternChange:
    """What one view does to the library (to be written in the view's transaction)."""

    put: tuple[PatternRecord, ...]
    delete: tuple[int, ...]
    next_pid: int


class SkillLibrary:
    """Patterns by id (stats in ``entries``, keys only in the index), with their index."""

    def __init__(self, index: VectorIndex, merge_threshold: float, next_pid: int = 1) -> None:
        self.index = index
        self.merge_threshold = merge_threshold
        self.entries: dict[int, PatternRecord] = {}
        self.next_pid = next_pid

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, records: Iterable[PatternRecord], batch: int = 4096) -> None:
        """Bulk-add stored patterns (at open)."""
        pending: list[PatternRecord] = []
        for rec in records:
            pending.append(rec)
            if len(pending) >= batch:
                self._bulk(pending)
                pending = []
        if pending:
            self._bulk(pending)

    def _bulk(self, recs: list[PatternRecord]) -> None:
        for rec in recs:
            self.entries[rec.pid] = _keyless(rec)
            self.next_pid = max(self.next_pid, rec.pid + 1)
        evicted = self.index.add(
            np.asarray([r.pid for r in recs], dtype=np.int64),
            np.stack([r.key for r in recs]).astype(np.float32),
            np.asarray([pattern_value(r.successes, r.samples) for r in recs], dtype=np.float32),
        )
        for pid in np.asarray(evicted).tolist():
            self.entries.pop(int(pid), None)

    def observe(self, key: F32, content_id: str, success: bool, ts: float) -> PatternChange:
        """Update the matching pattern or create one. Mutates RAM and the index.

        If the caller's transaction then fails, it must ``reload`` from LMDB.
        """
        match = self._match(key, content_id)
        if match is not None:
            old = self.entries[match]
            rec = PatternRecord(match, content_id, old.successes + (1.0 if success else 0.0),
                                old.samples + 1, ts, self.key(match))
            self.entries[match] = _keyless(rec)
            # The index's eviction order must see the new value.
            self.index.set_values(np.asarray([match], dtype=np.int64),
                                  np.asarray([pattern_value(rec.successes, rec.samples)]))
            return PatternChange((rec,), (), self.next_pid)
        rec = PatternRecord(self.next_pid, content_id, 1.0 if success else 0.0, 1, ts,
                            key.astype(np.float32))
        self.next_pid += 1
        evicted = self._add(rec)
        return PatternChange(self._kept(rec), evicted, self.next_pid)

    def _kept(self, rec: PatternRecord) -> tuple[PatternRecord, ...]:
        # The index may evict the very pattern just added when it is worth least.
        return (rec,) if rec.pid in self.entries else ()

    def key(self, pid: int) -> F32:
        """A pattern's key, read from the index (RAM holds each key once, there)."""
        out: F32 = self.index.get_vectors(np.asarray([pid], dtype=np.int64))[0]
        return out

    def records(self) -> list[PatternRecord]:
        """Every pattern with its key (for consolidation)."""
        pids = np.asarray(sorted(self.entries), dtype=np.int64)
        keys = self.index.get_vectors(pids) if pids.size else np.zeros((0, 0), np.float32)
        return [replace(self.entries[p], key=keys[i]) for i, p in enumerate(pids.tolist())]

    def _add(self, rec: PatternRecord) -> tuple[int, ...]:
        self.entries[rec.pid] = _keyless(rec)
        evicted = self.index.add(np.asarray([rec.pid], dtype=np.int64), rec.key[None, :],
                                 np.asarray([pattern_value(rec.successes, rec.samples)],
                                            dtype=np.float32))
        gone = tuple(int(p) for p in np.asarray(evicted).tolist())
        for pid in gone:
            self.entries.pop(pid, None)
        return gone

    def _match(self, key: F32, content_id: str, k: int = 8) -> int | None:
        if not self.entries:
            return None
        scores, ids = self.index.search(key[None, :].astype(np.float32), min(k, len(self.entries)))
        for s, pid in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            if pid < 0 or s < self.merge_threshold:
                continue
            rec = self.entries.get(int(pid))
            if rec is not None and rec.content_id == content_id:
                return int(pid)
        return None

    def nearest(self, query: F32, k: int) -> list[tuple[float, PatternRecord]]:
        """The ``k`` patterns whose keys are closest to ``query`` (cosine, best first)."""
        if not self.entries or k <= 0:
            return []
        scores, ids = self.index.search(query[None, :].astype(np.float32),
                                        min(k, len(self.entries)))
        out = []
        for s, pid in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            rec = self.entries.get(int(pid)) if pid >= 0 else None
            if rec is not None:
                out.append((float(s), rec))
        return out


_NO_KEY = np.zeros(0, dtype=np.float32)


def _keyless(rec: PatternRecord) -> PatternRecord:
    return replace(rec, key=_NO_KEY)


def consolidate(
    records: Iterable[PatternRecord], threshold: float = 0.8, max_clusters: int = 256
) -> list[dict[str, Any]]:
    """Cluster patterns greedily by key (most valuable first) into the reasoning bank.

    A pattern joins the first cluster whose centroid is within ``threshold``
    cosine, else starts one (up to ``max_clusters``; the rest join their nearest).
    Each cluster: normalized centroid (float32 bytes), size, and per title
    [successes, samples] summed over its patterns.
    """
    recs = sorted(records, key=lambda r: -pattern_value(r.successes, r.samples))
    if not recs:
        return []
    dim = recs[0].key.size
    sums = np.zeros((max_clusters, dim), dtype=np.float32)
    cents = np.zeros((max_clusters, dim), dtype=np.float32)
    sizes: list[int] = []
    contents: list[dict[str, list[float]]] = []
    for rec in recs:
        n = len(sizes)
        c = -1
        if n:
            sims = cents[:n] @ rec.key
            best = int(np.argmax(sims))
            if sims[best] >= threshold or n == max_clusters:
                c = best
        if c < 0:
            c = n
            sizes.append(0)
            contents.append({})
        sizes[c] += 1
        sums[c] += rec.key
        norm = float(np.linalg.norm(sums[c]))
        cents[c] = sums[c] / norm if norm > 0 else sums[c]
        stat = contents[c].setdefault(rec.content_id, [0.0, 0.0])
        stat[0] += rec.successes
        stat[1] += rec.samples
    return [{"centroid": cents[i].tobytes(), "size": sizes[i], "contents": contents[i]}
            for i in range(len(sizes))]
