"""Ranking orchestration: from the brain's state to ``k`` titles with reasons.

``Ranker`` gathers the signals (content similarity to the recent views and the
nearest patterns, the crowd's neighbour lists, popularity, trends, the viewer's
genres by daypart), picks candidates (every title up to ``full_scan_items``, else
an HNSW search plus the crowd's and the genres' picks), ranks them with
``omega.brain.recommender`` (plain functions) and explains each pick. It keeps
caches tied to one catalog generation: similarity rows, release years, genre
scores per daypart (cleared by ``forget_context`` after a view).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain import recommender as rk
from omega.brain.catalog import Catalog
from omega.brain.content import Recommendation, check_context
from omega.brain.crowd import CrowdView
from omega.brain.errors import BadInput, InvalidEvent
from omega.brain.learning import Counts, normalized
from omega.brain.patterns import SkillLibrary
from omega.brain.profile import ALL_DAY, event_daypart, genre_affinity
from omega.brain.settings import BrainSettings
from omega.index import VectorIndex

__all__ = ["Ranker", "ViewerState", "check_request"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
#: The last second of year 9999, datetime's limit: a clock beyond it has no year.
_MAX_DATETIME_TS = 253_402_300_799


@dataclass(frozen=True)
class ViewerState:
    """What the ranker reads of the brain's state for one call (references, not copies)."""

    #: (catalog position, watch fraction, timestamp) of the recent views, newest first.
    recent: deque[tuple[int, float, float]]
    profile: F32
    library: SkillLibrary
    crowd: CrowdView
    #: Watched titles by catalog position.
    watched: npt.NDArray[np.bool_]
    counts: Counts
    catalog_gen: int
    #: The catalog's HNSW index, built on first need.
    catalog_ann: Callable[[], VectorIndex]


def check_request(k: object, timestamp: object, context: Mapping[str, str] | None,
                  max_k: int) -> float:
    """``BadInput`` / ``InvalidEvent`` for a bad request; the timestamp as a float."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise BadInput(f"k must be an integer in [1, {max_k}], got {k!r}")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) \
            or not math.isfinite(timestamp):
        raise InvalidEvent("timestamp", f"must be a finite number, got {timestamp!r}")
    check_context(context)
    return float(timestamp)


class Ranker:
    """Ranks one catalog for one viewer; not thread-safe (the brain's lock serializes)."""

    def __init__(self, settings: BrainSettings, catalog: Catalog) -> None:
        self._settings = settings
        self._catalog = catalog
        r = settings.recommender
        self._with_crowd = replace(r, popularity=r.popularity_with_crowd)
        self._ctx_cache: dict[str, F32] = {}
        # Each compared title's cosine to the whole catalog (full scans), by position;
        # valid for one catalog generation (see _similarity_rows).
        self._sim_rows: dict[int, F32] = {}
        self._sim_rows_gen = -1
        self._years_gen = -1
        self._years = np.zeros(0, dtype=np.int64)
        self._v: Any = None  # the ViewerState of the call in progress

    def forget_context(self) -> None:
        """The genre counts changed (a view): recompute the per-daypart genre scores."""
        self._ctx_cache.clear()

    def rank(self, v: ViewerState, k: int, timestamp: float,
             context: Mapping[str, str] | None) -> list[Recommendation]:
        """The top ``k`` unwatched titles, best first (arguments already checked)."""
        self._v = v
        s = self._settings
        w = s.recommender
        cat = self._catalog
        n = len(cat)
        if n == 0:
            return []
        hist = np.fromiter((p for p, _, _ in v.recent), dtype=np.int64,
                           count=len(v.recent))
        fracs = np.fromiter((f for _, f, _ in v.recent), dtype=np.float32,
                            count=len(v.recent))
        weights = rk.view_weights(fracs, decay=s.recency_decay,
                                  success_threshold=s.success_threshold,
                                  abandoned_weight=s.abandoned_weight)
        emb = cat.embeddings
        query = normalized(v.profile)
        # Content: each title against the last few views one by one (a power mean
        # of the cosines, docs/brain.md §4), plus the titles of the nearest patterns.
        m = min(w.similar_history, hist.size)
        compared = hist[:m]
        sim_w = rk.view_weights(fracs[:m], decay=w.similar_decay,
                                success_threshold=s.success_threshold,
                                abandoned_weight=s.abandoned_weight)
        if w.pattern > 0 and np.any(query):
            near = [(sim, r) for sim, r in v.library.nearest(query, w.pattern_neighbours)
                    if r.content_id in cat.position]
            if near:
                pw = rk.pattern_weights(
                    np.asarray([x for x, _ in near], np.float32),
                    np.asarray([(r.successes + 1) / (r.samples + 2) for _, r in near],
                               np.float32), w.pattern)
                compared = np.concatenate([compared, np.asarray(
                    [cat.position[r.content_id] for _, r in near], dtype=np.int64)])
                sim_w = np.concatenate([sim_w, pw]).astype(np.float32)
        crowd = v.crowd
        if crowd.neighbours and hist.size and w.crowd > 0:
            cf, cf_anchor = rk.crowd_scores(hist, weights, crowd.neighbours, n)
        else:
            cf, cf_anchor = np.zeros(n, np.float32), np.full(n, -1, np.int32)
        if crowd.neighbours:
            w = self._with_crowd
        cand = self._candidates(query, cf, compared)
        full = cand.size == n  # every title: views, not copies (15 MB at 10,000)
        pick: Any = slice(None) if full else cand
        cand_emb = emb if full else emb[cand]
        if compared.size == 0:
            content = np.zeros(cand.size, np.float32)
        else:
            # einsum, not BLAS: OpenBLAS threads have a 100+ ms tail on a busy box.
            rows = self._similarity_rows(compared) if full \
                else np.einsum("ij,kj->ki", cand_emb, emb[compared])
            content = rk.history_similarity(rows, sim_w, w.similar_sharpness)
        part = event_daypart(float(timestamp), context, s.utc_offset_s)
        ctx_all = self._context_scores(part) if w.context > 0 else np.zeros(n, np.float32)
        signals = rk.Signals(
            crowd=cf[pick], content=content,
            popularity=crowd.popularity[pick], trend=crowd.trend[pick],
            context=ctx_all[pick])
        later = self._unreleased(float(timestamp), hist)[pick] if w.unreleased_last \
            else None
        ranked = rk.rank(cand, signals, w, k, exclude=v.watched[pick],
                         first_genre=cat.first_genre[pick], embeddings=cand_emb, later=later)
        return self._explain(ranked, hist, fracs, cf_anchor, part)


    def _similarity_rows(self, positions: I64) -> F32:
        """Each title's cosine to every catalog title, ``(len(positions), n)``.

        A row is computed once (~1 ms at 10,000 titles) and kept while its title
        stays among the compared ones: after a view, one new row. Rows of an
        older catalog generation are dropped.
        """
        gen = self._v.catalog_gen
        if gen != self._sim_rows_gen:
            self._sim_rows = {}
            self._sim_rows_gen = gen
        emb = self._catalog.embeddings
        out = np.empty((positions.size, emb.shape[0]), dtype=np.float32)
        kept: dict[int, F32] = {}
        for j, pos in enumerate(positions.tolist()):
            row = kept.get(pos)
            if row is None:
                row = self._sim_rows.get(pos)
            if row is None:
                row = np.einsum("ij,j->i", emb, emb[pos])
            kept[pos] = row
            out[j] = row
        self._sim_rows = kept
        return out

    def _unreleased(self, timestamp: float, hist: I64) -> npt.NDArray[np.bool_]:
        """Titles released after the year of ``timestamp`` (local time).

        A clock that runs behind the viewer's own history (a TV at 1970 before its
        first time sync) is corrected: now is no earlier than the newest release
        year among the recent views. A clock without a year holds nothing back.
        """
        gen = self._v.catalog_gen
        if gen != self._years_gen or self._years.size != len(self._catalog):
            self._years = np.asarray([r.year if r.year is not None else -1
                                      for r in self._catalog.records], dtype=np.int64)
            self._years_gen = gen
        local = timestamp + self._settings.utc_offset_s
        if not 0 <= local <= _MAX_DATETIME_TS:
            return np.zeros(self._years.size, dtype=bool)
        year = dt.datetime.fromtimestamp(local, dt.UTC).year
        if hist.size:
            year = max(year, int(self._years[hist].max()))
        unreleased: npt.NDArray[np.bool_] = self._years > year
        return unreleased

    def _candidates(self, query: F32, cf: F32, compared: I64) -> I64:
        n = len(self._catalog)
        w = self._settings.recommender
        if n <= w.full_scan_items:
            return np.arange(n, dtype=np.int64)
        parts = [np.flatnonzero(cf).astype(np.int64),
                 self._v.crowd.top_items[: w.popular_candidates]]
        index = self._v.catalog_ann() if np.any(query) or compared.size else None
        if index is not None and np.any(query):
            _, ids = index.search(query[None, :], min(w.content_candidates, n))
            parts.append(ids[0][ids[0] >= 0].astype(np.int64))
        if index is not None and compared.size:
            # The nearest titles of each compared view: where its similarity is high.
            per = min(max(10, w.content_candidates // compared.size), n)
            _, ids = index.search(self._catalog.embeddings[compared], per)
            parts.append(ids[ids >= 0].astype(np.int64))
        if w.context > 0:
            # The viewer's favourite genres reach the list even without a content match.
            ctx = self._context_scores(None)
            if np.any(ctx):
                top = min(w.content_candidates, n)
                parts.append(np.argpartition(-ctx, top - 1)[:top].astype(np.int64))
        cand = np.unique(np.concatenate(parts))
        if cand.size == 0:
            cand = np.arange(max(0, n - 4 * w.max_k), n, dtype=np.int64)
        return cand

    def _context_scores(self, part: str | None) -> F32:
        key = part or ALL_DAY
        cached = self._ctx_cache.get(key)
        if cached is None:
            cat = self._catalog
            aff = genre_affinity(self._v.counts, cat.genre_vocabulary(), key)
            cached = rk.item_context_scores(aff, cat.genre_ptr, cat.genre_ids)
            self._ctx_cache[key] = cached
        return cached

    def _explain(self, ranked: list[rk.Ranked], hist: I64, fracs: F32,
                 cf_anchor: npt.NDArray[np.int32], part: str) -> list[Recommendation]:
        cat = self._catalog
        s = self._settings
        w = s.recommender
        items = np.asarray([r.item for r in ranked], dtype=np.int64)
        h = hist[: w.similar_history]
        h_w = rk.view_weights(fracs[: h.size], decay=w.similar_decay,
                              success_threshold=s.success_threshold,
                              abandoned_weight=s.abandoned_weight)
        sim_anchor = rk.content_anchors(cat.embeddings[items], cat.embeddings[h], h_w,
                                        w.similar_sharpness) if items.size else items
        out = []
        for i, r in enumerate(ranked):
            anchor = -1
            if r.source == "crowd":
                anchor = int(cf_anchor[r.item])
            elif r.source == "similar":
                anchor = int(sim_anchor[i])
            genre = self._best_genre(r.item, part) if r.source == "context" else None
            text = rk.reason_text(
                r.source,
                anchor_title=cat.title(int(hist[anchor])) if anchor >= 0 else None,
                anchor_finished=bool(fracs[anchor] >= s.success_threshold) if anchor >= 0
                else True,
                genre=genre, daypart=part)
            out.append(Recommendation(cat.ids[r.item], round(r.score, 6), text, r.source,
                                      cat.title(r.item)))
        return out

    def _best_genre(self, pos: int, part: str) -> str | None:
        cat = self._catalog
        names = cat.records[pos].genres
        if not names:
            return None
        vocab = [g.strip().lower() for g in names]
        aff = genre_affinity(self._v.counts, vocab, part)
        return names[int(np.argmax(aff))].strip()
