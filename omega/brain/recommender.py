"""Ranking: plain functions over arrays and dicts (no LMDB, no index, no model).

Items are dense catalog positions (``int``). The brain gathers the inputs —
recent history, crowd neighbour lists, embeddings, popularity, trends, genre
affinity — and ``rank`` blends them (docs/brain.md, "Recommender"):

    score(i) = w_crowd   · CF(i) / max CF            CF(i) = Σ_j w_j · s(h_j, i)
             + w_content · SIM(i)                     SIM(i) = (Σ_j v_j c_ij^p / Σ_j v_j)^(1/p)
             + w_pop     · pop(i)      + w_trend · trend(i)
             + w_context · mean_{g ∈ genres(i)} affinity(daypart, g)

with w_j = decay**j for the j-th most recent view, times ``abandoned_weight``
when that view was abandoned (watch fraction < success threshold); v_j the same
with the content decay over the last few views, c_ij = max(0, cos(e_{h_j}, e_i)).
SIM is a power mean: with a large p a title very like one recent view beats one
vaguely like all of them. Already watched titles are removed, unreleased ones
go last, the list is diversified (a cap per first genre, and optionally MMR),
and each result names the signal that placed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from omega.brain.settings import RecommenderSettings

__all__ = [
    "SOURCES",
    "Neighbours",
    "Ranked",
    "Signals",
    "blend",
    "content_anchors",
    "crowd_scores",
    "diversify",
    "history_similarity",
    "item_context_scores",
    "pattern_weights",
    "profile_vector",
    "rank",
    "reason_text",
    "scale_popularity",
    "view_weights",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
#: item → (neighbour items, similarity scores), from the crowd (DESIGN.md §7).
Neighbours = Mapping[int, tuple[I64, F32]]
#: The order of the columns of ``blend``'s contribution matrix.
SOURCES: tuple[str, ...] = ("crowd", "similar", "popular", "trending", "context")


def view_weights(
    fractions: npt.ArrayLike, *, decay: float, success_threshold: float, abandoned_weight: float
) -> F32:
    """Weights of the recent views, most recent first: decay**j, less when abandoned."""
    fr = np.asarray(fractions, dtype=np.float32)
    w = np.power(np.float32(decay), np.arange(fr.size, dtype=np.float32))
    return (w * np.where(fr >= success_threshold, 1.0, abandoned_weight)).astype(np.float32)


def profile_vector(embeddings: F32, weights: F32) -> F32:
    """The recency-weighted mean of the history's embeddings, L2-normalized (zeros if empty)."""
    if embeddings.shape[0] == 0 or float(weights.sum()) <= 0.0:
        return np.zeros(embeddings.shape[1], dtype=np.float32)
    v: F32 = (weights[:, None] * embeddings).sum(axis=0).astype(np.float32)
    norm = float(np.linalg.norm(v))
    return (v / np.float32(norm)).astype(np.float32) if norm > 0 else v


def pattern_weights(sims: F32, rates: F32, weight: float) -> F32:
    """Weights of the nearest patterns' titles when they join the recent views.

    A pattern (a taste key and the title that followed it) counts
    ``weight · max(0, cos(key, now)) · success rate``: titles that succeeded when
    the taste looked like now are compared with the catalog like recent views.
    """
    if weight <= 0.0:
        return np.zeros(sims.shape, dtype=np.float32)
    out: F32 = (weight * np.clip(sims, 0.0, None) * rates).astype(np.float32)
    return out


def history_similarity(rows: F32, weights: F32, sharpness: float) -> F32:
    """How close each title is to the recent views: a weighted power mean of its cosines.

    ``rows[j, i]`` is title i's cosine to the j-th recent view and ``weights[j]``
    that view's weight. Returns ``(Σ_j w_j max(0, rows[j])^p / Σ_j w_j)^(1/p)`` with
    ``p = sharpness``: 1 is the weighted mean similarity, and as p grows it
    approaches the best single match (scores stay on the cosine scale, [0, 1]).
    Zeros when there is no view or no weight.
    """
    n = rows.shape[1]
    total_w = float(weights.sum()) if weights.size else 0.0
    if rows.shape[0] == 0 or total_w <= 0.0:
        return np.zeros(n, dtype=np.float32)
    x = _power(np.clip(rows, 0.0, None).astype(np.float32), sharpness)
    mean = np.einsum("k,ki->i", (weights / total_w).astype(np.float32), x)
    out: F32 = np.power(mean, np.float32(1.0 / sharpness)).astype(np.float32)
    return out


def _power(x: F32, p: float) -> F32:
    """``x**p`` for x >= 0, in place; integer powers by squaring (several times faster)."""
    if p != int(p):
        return np.power(x, np.float32(p), out=x)
    e = int(p)
    result: F32 | None = None
    while e:
        if e & 1:
            result = x.copy() if result is None else np.multiply(result, x, out=result)
        e >>= 1
        if e:
            np.multiply(x, x, out=x)
    assert result is not None  # p >= 1
    return result


def crowd_scores(
    history: Sequence[int] | I64, weights: F32, neighbours: Neighbours, n_items: int
) -> tuple[F32, npt.NDArray[np.int32]]:
    """CF(i) = Σ_j w_j · s(h_j, i) over the crowd's neighbour lists of the history.

    Returns dense scores over all ``n_items`` and, per item, the history position
    that contributed most (-1 if none) — the title named in the reason.
    """
    scores = np.zeros(n_items, dtype=np.float32)
    best = np.zeros(n_items, dtype=np.float32)
    anchor = np.full(n_items, -1, dtype=np.int32)
    for j, item in enumerate(history):
        entry = neighbours.get(int(item))
        if entry is None:
            continue
        ids, sims = entry
        contrib = weights[j] * sims
        np.add.at(scores, ids, contrib)
        better = contrib > best[ids]
        if better.any():
            best[ids[better]] = contrib[better]
            anchor[ids[better]] = j
    return scores, anchor


def scale_popularity(counts: npt.ArrayLike) -> F32:
    """Map non-negative popularity to [0, 1] on a log scale (the most popular is 1)."""
    c = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    top = float(c.max()) if c.size else 0.0
    if top <= 0.0:
        return np.zeros(c.shape, dtype=np.float32)
    out: F32 = (np.log1p(c) / np.log1p(top)).astype(np.float32)
    return out


def item_context_scores(affinity: F32, genre_ptr: I64, genre_ids: I64) -> F32:
    """Per item, the mean affinity of its genres (items stored CSR: ptr, ids)."""
    n_items = genre_ptr.size - 1
    out = np.zeros(n_items, dtype=np.float32)
    if genre_ids.size == 0 or affinity.size == 0:
        return out
    vals = affinity[genre_ids].astype(np.float32)
    counts = np.diff(genre_ptr)
    has = counts > 0
    sums = np.add.reduceat(vals, genre_ptr[:-1][has]) if has.any() else vals[:0]
    out[has] = sums / counts[has]
    return out


@dataclass(frozen=True)
class Signals:
    """Each signal for each candidate, already scaled to [0, 1] (content: cosine)."""

    crowd: F32
    content: F32
    popularity: F32
    trend: F32
    context: F32


def blend(signals: Signals, weights: RecommenderSettings) -> tuple[F32, F32]:
    """The weighted sum, and each signal's weighted contribution (columns = SOURCES)."""
    crowd = signals.crowd
    top = float(crowd.max()) if crowd.size else 0.0
    if top > 0:
        crowd = crowd / top
    parts = np.stack(
        [
            weights.crowd * crowd,
            weights.content * np.clip(signals.content, 0.0, None),
            weights.popularity * signals.popularity,
            weights.trend * signals.trend,
            weights.context * signals.context,
        ],
        axis=1,
    ).astype(np.float32)
    return parts.sum(axis=1), parts


def diversify(
    order: I64,
    k: int,
    first_genre: I64,
    genre_cap: int,
    embeddings: F32 | None = None,
    scores: F32 | None = None,
    mmr_lambda: float = 1.0,
) -> I64:
    """Pick k of the candidates (``order``: positions, best first).

    With ``mmr_lambda < 1`` (and embeddings/scores given), maximal marginal
    relevance picks greedily; then at most ``genre_cap`` picks may share a
    first genre (-1 = no genre, never capped). If the cap leaves fewer than k,
    the best skipped ones fill the list.
    """
    if mmr_lambda < 1.0 and embeddings is not None and scores is not None and order.size > 1:
        # Without a genre cap only the first k picks matter.
        picks = k if genre_cap <= 0 else min(order.size, 4 * k)
        order = _mmr(order, min(order.size, 4 * k), picks, embeddings, scores, mmr_lambda)
    if genre_cap <= 0:
        return order[:k]
    picked: list[int] = []
    skipped: list[int] = []
    used: dict[int, int] = {}
    for pos in order.tolist():
        g = int(first_genre[pos])
        if g >= 0 and used.get(g, 0) >= genre_cap:
            skipped.append(pos)
            continue
        used[g] = used.get(g, 0) + 1
        picked.append(pos)
        if len(picked) == k:
            break
    if len(picked) < k:
        picked.extend(skipped[: k - len(picked)])
    return np.asarray(picked, dtype=np.int64)


def _mmr(order: I64, n: int, picks: int, embeddings: F32, scores: F32, lam: float) -> I64:
    """Reorder the first ``n`` of ``order`` by MMR; the first ``picks`` are chosen greedily."""
    pool = order[: max(n, 1)]
    emb = embeddings[pool]
    rel = lam * scores[pool].astype(np.float32)
    chosen: list[int] = []
    penalty = np.zeros(pool.size, dtype=np.float32)
    value = rel.copy()
    for _ in range(min(picks, pool.size)):
        best = int(np.argmax(value))
        chosen.append(best)
        sims = np.einsum("ij,j->i", emb, emb[best])
        penalty = sims if len(chosen) == 1 else np.maximum(penalty, sims)
        value = rel - (1.0 - lam) * penalty
        value[chosen] = -np.inf
    taken = np.zeros(pool.size, dtype=bool)
    taken[chosen] = True
    rest_of_pool = np.flatnonzero(~taken)  # keep their relevance order
    return np.concatenate([pool[np.asarray(chosen, dtype=np.int64)], pool[rest_of_pool],
                           order[pool.size:]]).astype(np.int64)


@dataclass(frozen=True)
class Ranked:
    """One ranked candidate: its catalog position, blended score and the leading signal."""

    item: int
    score: float
    source: str


def rank(
    candidates: I64,
    signals: Signals,
    weights: RecommenderSettings,
    k: int,
    *,
    exclude: npt.NDArray[np.bool_] | None = None,
    first_genre: I64 | None = None,
    embeddings: F32 | None = None,
    later: npt.NDArray[np.bool_] | None = None,
) -> list[Ranked]:
    """Blend, drop watched titles, keep the best, diversify; best first.

    ``exclude`` (already watched), ``first_genre``, ``embeddings`` and ``later``
    are indexed by candidate position. ``later`` titles (not released yet) only
    fill a list the others cannot, best first.
    A candidate with no signal at all ranks by catalog recency (source ``new``).
    """
    if candidates.size == 0 or k <= 0:
        return []
    total, parts = blend(signals, weights)
    # Ties (typically: nothing known at all) go to the most recently added titles.
    tie = candidates.astype(np.float64) / float(max(int(candidates.max()), 1) * 1e6)
    key = total.astype(np.float64) + tie
    if exclude is not None:
        key[exclude] = -np.inf
    held = np.zeros(0, dtype=np.int64)
    if later is not None and bool(later.any()):
        held = _best(np.where(later, key, -np.inf), k)
        key = np.where(later, -np.inf, key)
    pool = _best(key, min(candidates.size, max(4 * k, k + 50)))
    genres = first_genre if first_genre is not None else np.full(candidates.size, -1, np.int64)
    # With no signal at all the order is only "newest first": nothing to trade off.
    lam = weights.mmr_lambda if bool((total[pool] > 0).any()) else 1.0
    chosen = diversify(pool, k, genres, weights.genre_cap, embeddings,
                       key.astype(np.float32), lam)
    if chosen.size < k and held.size:
        chosen = np.concatenate([chosen, held[: k - chosen.size]])
    out: list[Ranked] = []
    for pos in chosen.tolist():
        row = parts[pos]
        lead = int(np.argmax(row))
        source = SOURCES[lead] if row[lead] > 0 else "new"
        out.append(Ranked(item=int(candidates[pos]), score=float(total[pos]), source=source))
    return out


def _best(key: npt.NDArray[np.float64], n: int) -> I64:
    """Positions of the ``n`` largest finite keys, best first (stable on ties)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    pool = np.argpartition(-key, n - 1)[:n] if n < key.size else np.arange(key.size)
    pool = pool[np.argsort(-key[pool], kind="stable")]
    out: I64 = pool[np.isfinite(key[pool])].astype(np.int64)
    return out


def content_anchors(
    items: F32, history: F32, weights: F32, sharpness: float = 1.0
) -> npt.NDArray[np.int64]:
    """Per recommended item, the history position that adds most to its similarity.

    That is the largest ``weights[j] · max(0, cos)^sharpness``: with the sharpness
    of ``history_similarity``, the view the title was found through.
    """
    if history.shape[0] == 0 or items.shape[0] == 0:
        return np.full(items.shape[0], -1, dtype=np.int64)
    sims = np.power(np.clip(items @ history.T, 0.0, None), sharpness) * weights[None, :]
    best: npt.NDArray[np.int64] = np.argmax(sims, axis=1).astype(np.int64)
    return best


def reason_text(
    source: str,
    *,
    anchor_title: str | None = None,
    anchor_finished: bool = True,
    genre: str | None = None,
    daypart: str | None = None,
) -> str:
    """A sentence a viewer can read, for the signal that placed the title."""
    if source == "crowd" and anchor_title:
        verb = "finished" if anchor_finished else "watched"
        return f"because you {verb} {anchor_title}"
    if source == "similar" and anchor_title:
        return f"similar to {anchor_title}"
    if source == "trending":
        return "trending in your region"
    if source == "popular":
        return "popular now"
    if source == "context" and genre and daypart:
        return f"you often enjoy {genre} in the {daypart}"
    if source == "context" and genre:
        return f"you often enjoy {genre}"
    if source in ("crowd", "similar"):
        return "based on what you watched"
    return "new in your catalog"
