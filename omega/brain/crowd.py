"""The crowd's knowledge on the TV: validation of an update, and its in-RAM form.

What federation sends (DESIGN.md §7): each title's neighbour list (title →
[(neighbour, similarity)]), popularity, and regional trends, under a global
version. Stored as ids (a title may arrive before its catalog entry) and
resolved to catalog positions for ranking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain.catalog import Catalog
from omega.brain.errors import InvalidCrowdUpdate, StaleCrowdVersion
from omega.brain.memory import CrowdState, CrowdWrite
from omega.brain.recommender import Neighbours, scale_popularity

__all__ = ["MAX_NEIGHBOURS", "MAX_TITLES", "MAX_TRENDS", "CrowdView", "check_crowd_update"]

MAX_NEIGHBOURS = 200
MAX_TITLES = 1_000_000
MAX_TRENDS = 10_000
MAX_ID_CHARS = 256
F32 = npt.NDArray[np.float32]


def _check_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidCrowdUpdate(f"{where}: content ids are strings of 1-{MAX_ID_CHARS} chars")
    return value


def _check_score(value: Any, where: str, *, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidCrowdUpdate(f"{where}: scores must be finite numbers, got {value!r}")
    if non_negative and value < 0:
        raise InvalidCrowdUpdate(f"{where}: must be >= 0, got {value!r}")
    return float(value)


def check_crowd_update(
    neighbours: Mapping[str, Sequence[tuple[str, float]]],
    popularity: Mapping[str, float],
    trends: Sequence[tuple[str, float]],
    version: int,
    current_version: int,
) -> CrowdWrite:
    """Validate a crowd update completely (before anything is written) and normalize it."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**63:
        raise InvalidCrowdUpdate(f"version must be a non-negative integer, got {version!r}")
    if version < current_version:
        raise StaleCrowdVersion(version, current_version)
    if not isinstance(neighbours, Mapping) or not isinstance(popularity, Mapping):
        raise InvalidCrowdUpdate("neighbours and popularity must be mappings")
    if len(neighbours) > MAX_TITLES or len(popularity) > MAX_TITLES:
        raise InvalidCrowdUpdate(f"at most {MAX_TITLES} titles per update")
    nbrs: dict[str, list[tuple[str, float]]] = {}
    for cid, lst in neighbours.items():
        _check_id(cid, "neighbours")
        if isinstance(lst, str | bytes) or not isinstance(lst, Sequence):
            raise InvalidCrowdUpdate(f"neighbours[{cid!r}] must be a list of (id, score)")
        if len(lst) > MAX_NEIGHBOURS:
            raise InvalidCrowdUpdate(f"neighbours[{cid!r}]: at most {MAX_NEIGHBOURS} neighbours")
        clean: dict[str, float] = {}
        for pair in lst:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise InvalidCrowdUpdate(f"neighbours[{cid!r}]: entries are (id, score) pairs")
            nid = _check_id(pair[0], f"neighbours[{cid!r}]")
            score = _check_score(pair[1], f"neighbours[{cid!r}][{nid!r}]")
            if nid != cid:
                clean[nid] = max(score, clean.get(nid, -math.inf))
        nbrs[cid] = sorted(clean.items(), key=lambda p: -p[1])
    pop = {_check_id(c, "popularity"): _check_score(s, f"popularity[{c!r}]", non_negative=True)
           for c, s in popularity.items()}
    if isinstance(trends, str | bytes) or not isinstance(trends, Sequence) \
            or len(trends) > MAX_TRENDS:
        raise InvalidCrowdUpdate(f"trends must be a list of at most {MAX_TRENDS} (id, score)")
    trend_list: list[tuple[str, float]] = []
    for pair in trends:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise InvalidCrowdUpdate("trends: entries are (id, score) pairs")
        trend_list.append((_check_id(pair[0], "trends"),
                           _check_score(pair[1], f"trends[{pair[0]!r}]", non_negative=True)))
    return CrowdWrite(version=version, neighbours=nbrs, popularity=pop, trends=trend_list)


def merge(state: CrowdState, w: CrowdWrite) -> None:
    """Apply an update to the in-RAM copy exactly as ``Memory.write_crowd`` stores it."""
    for cid, lst in w.neighbours.items():
        if lst:
            state.neighbours[cid] = list(lst)
        else:
            state.neighbours.pop(cid, None)
    state.popularity.update(w.popularity)
    state.trends = list(w.trends)
    state.version = w.version


class CrowdView:
    """The crowd state resolved to catalog positions (unknown titles skipped)."""

    def __init__(self, state: CrowdState, catalog: Catalog) -> None:
        self.version = state.version
        pos = catalog.position
        self.neighbours: Neighbours = {}
        nb: dict[int, tuple[npt.NDArray[np.int64], F32]] = {}
        for cid, lst in state.neighbours.items():
            i = pos.get(cid)
            if i is None:
                continue
            known = [(pos[n], s) for n, s in lst if n in pos]
            if known:
                nb[i] = (np.asarray([p for p, _ in known], dtype=np.int64),
                         np.asarray([s for _, s in known], dtype=np.float32))
        self.neighbours = nb
        n = len(catalog)
        crowd_pop = np.full(n, np.nan)
        for cid, s in state.popularity.items():
            i = pos.get(cid)
            if i is not None:
                crowd_pop[i] = s
        #: Where the crowd has spoken it wins; else the catalog's own prior; else 0.
        self.has_crowd_popularity = bool(np.isfinite(crowd_pop).any())
        raw = np.where(np.isfinite(crowd_pop), crowd_pop,
                       0.0 if self.has_crowd_popularity else catalog.meta_popularity)
        self.popularity: F32 = scale_popularity(np.nan_to_num(raw, nan=0.0))
        self.trend: F32 = np.zeros(n, dtype=np.float32)
        for cid, s in state.trends:
            i = pos.get(cid)
            if i is not None:
                self.trend[i] = max(self.trend[i], s)
        top = float(self.trend.max()) if n else 0.0
        if top > 0:
            self.trend /= top
        order = np.argsort(-(self.popularity + self.trend), kind="stable")
        self.top_items = order[(self.popularity + self.trend)[order] > 0].astype(np.int64)
