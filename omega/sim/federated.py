"""The federated crowd, simulated in one process through the real report and release code.

Every benchmark user is a TV. Its training views become windowed pairs
(``report.windowed_pairs``), each pair a co-view (``report.coview``), locally
randomized (``report.Randomizer``) and sealed to the hub's key (``report.seal``).
All sealed reports of all TVs are shuffled together and cut into batches (what
the shards and the aggregator forward: opaque bytes, no identities); the hub
opens each (``report.open_report``) and sums the batch (``CoviewSums.add_batch``).
``build_release`` then noises and thresholds the sums into the neighbour lists
and popularity a TV would pull.

Only training views are reported (BENCHMARKS.md §1: everything learned from other
users uses training items only). A TV reports each distinct pair once, its most
recent ``contributions`` pairs at most: that bound is what the noise is
calibrated to (``ReleaseSettings.contributions``).

:class:`CrowdScorer` scores the release the way the brain's crowd path does
(``Σ_j decay^j · list_{h_j}(i)``, the most recent view first), with numpy, for
tuning on validation and for the fleet sweep; the benchmark's federated rows are
scored by the real brain (``omega.sim.quality``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.federation.release import Release, ReleaseSettings, build_release
from omega.federation.report import (
    CoView,
    HubKey,
    Randomizer,
    coview,
    open_report,
    seal,
    title_key,
    windowed_pairs,
)
from omega.federation.sums import CoviewSums
from omega.sim.movielens import Item, UserHistory

__all__ = [
    "CrowdScorer",
    "FederatedSettings",
    "SimulatedCrowd",
    "simulate_crowd",
    "tv_coviews",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FederatedSettings:
    """How the simulated fleet reports and how the hub releases."""

    #: A view pairs with this many views before it (BENCHMARKS.md §1: 3-5).
    window: int = 3
    #: Probability a TV sends its true pair (``Randomizer.keep``; 1 = always).
    keep: float = 1.0
    #: Most reports one TV contributes (its most recent distinct pairs); sets the noise.
    #: 1000 was best on validation at 1 M TVs (300: -0.010 HR@10, no cap: -0.05).
    contributions: int = 1000
    #: Reports per shuffled batch the hub opens and sums (clipped per batch).
    batch: int = 1000
    #: Weight of an abandoned view (watch fraction < 0.8) in a pair. 1.0: equal on
    #: validation without noise (0.5: same, 0.25: -0.004 NDCG@10), and a single report
    #: of weight 1 clears the 1 M fleet's threshold where one of 0.5 does not.
    abandoned_weight: float = 1.0
    #: Release knobs (ε per release, δ, top-k, thresholds); ``noise``/fleet set per row.
    #: Top-50 lists: validation NDCG@10 of the brain's blend 0.0904 vs 0.0878 (30) and
    #: 0.0868 (20), HR@10 0.153 / 0.149 / 0.139 (docs/quality.md).
    release: ReleaseSettings = field(default_factory=lambda: ReleaseSettings(top_k=50))
    #: The simulated fleet of the ``-1m`` row.
    fleet: int = 1_000_000
    seed: int = 0

    def release_settings(self, *, noise: bool, fleet: int | None, population: int
                         ) -> ReleaseSettings:
        """The release settings of one row (the fleet scales the noise down).

        Without noise there is no threshold either (one report publishes a pair):
        the row shows what the sums themselves carry.
        """
        return replace(
            self.release,
            contributions=self.contributions,
            noise=noise,
            min_contributors=self.release.min_contributors if noise else 1,
            fleet_size=fleet if fleet is not None and fleet > population else None,
            population=population if fleet is not None and fleet > population else None,
        )


def tv_coviews(user: UserHistory, items: Sequence[Item], s: FederatedSettings) -> list[CoView]:
    """The co-views one TV reports: its training views' windowed pairs, each once, recent last."""
    views = [
        (str(items[int(i)].id), 1.0 if f >= 0.8 else s.abandoned_weight)
        for i, f in zip(user.train, user.fractions[: len(user.train)], strict=True)
    ]
    seen: dict[tuple[int, int], CoView] = {}
    for a, b, w in windowed_pairs(views, s.window):
        cv = coview(a, b, w)
        key = (cv.a, cv.b)
        seen.pop(key, None)  # re-inserted: ordered by the pair's latest occurrence
        seen[key] = cv
    pairs = list(seen.values())
    return pairs[-s.contributions:]


@dataclass
class SimulatedCrowd:
    """The hub's sums after every TV reported, and what it took."""

    sums: CoviewSums
    catalog: dict[int, str]
    population: int
    reports: int
    batches: int
    seconds: float
    clipped_weight: float = 0.0

    def release(self, s: FederatedSettings, *, noise: bool, fleet: int | None,
                seed: int = 0) -> Release:
        settings = s.release_settings(noise=noise, fleet=fleet, population=self.population)
        return build_release(self.sums, self.catalog, settings, np.random.default_rng(seed))


def simulate_crowd(
    users: Sequence[UserHistory],
    items: Sequence[Item],
    s: FederatedSettings,
    *,
    progress: bool = False,
) -> SimulatedCrowd:
    """Every TV's reports, sealed, shuffled, batched, opened and summed by the hub."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    rng = random.Random(s.seed)
    key = HubKey.generate(1)
    keys = {key.key_id: key}
    public = key.public_only()
    catalog = {title_key(str(i.id)): str(i.id) for i in items}
    all_keys = sorted(catalog)
    randomizer = Randomizer(s.keep)
    blobs: list[bytes] = []
    for user in tqdm(users, desc="TVs report", unit="TV", disable=not progress):
        for cv in tv_coviews(user, items, s):
            blobs.append(seal(randomizer.apply(cv, all_keys, rng), public))
    rng.shuffle(blobs)  # the shards' and the aggregator's shuffles, in one
    sums = CoviewSums()
    clipped = 0.0
    batches = 0
    for lo in tqdm(range(0, len(blobs), s.batch), desc="hub opens", unit="batch",
                   disable=not progress):
        opened = [open_report(keys, b).coview for b in blobs[lo: lo + s.batch]]
        stats = sums.add_batch(cv for cv in opened if cv is not None)
        clipped += stats.clipped_weight
        batches += 1
    return SimulatedCrowd(sums, catalog, len(users), len(blobs), batches,
                          time.perf_counter() - t0, clipped)


def resolve_release(
    release: Release, items: Sequence[Item]
) -> tuple[dict[int, tuple[IntArray, F32]], FloatArray]:
    """The release's lists by catalog position, and its popularity per position (0 if none)."""
    pos = {str(it.id): p for p, it in enumerate(items)}
    lists: dict[int, tuple[IntArray, F32]] = {}
    for cid, lst in release.neighbours.items():
        p = pos.get(cid)
        if p is not None:
            known = [(pos[o], v) for o, v in lst if o in pos]
            lists[p] = (np.array([k for k, _ in known], dtype=np.int64),
                        np.array([v for _, v in known], dtype=np.float32))
    counts = np.zeros(len(items))
    for cid, c in release.popularity.items():
        p = pos.get(cid)
        if p is not None:
            counts[p] = max(c, 0.0)
    return lists, counts


class CrowdScorer:
    """The brain's crowd path in numpy: ``Σ_j decay^j · list_{h_j}(i)``, newest view first.

    A ``Scorer`` (``omega.sim.baselines``): one score row per history. Items
    without any list score 0; ``popularity`` (optional, weight ``beta``) breaks
    ties and fills sparse histories, scaled as the brain scales it
    (``log1p(count) / log1p(max)``).
    """

    def __init__(self, release: Release, items: Sequence[Item], decay: float,
                 beta: float = 0.0) -> None:
        self._n = len(items)
        self._lists, counts = resolve_release(release, items)
        top = np.log1p(counts.max()) if counts.size and counts.max() > 0 else 1.0
        self._pop = np.log1p(counts) / top
        self.decay = decay
        self.beta = beta

    @property
    def n_items(self) -> int:
        return self._n

    def scores(self, histories: Sequence[IntArray]) -> FloatArray:
        out = np.zeros((len(histories), self._n), dtype=np.float64)
        for row, hist in enumerate(histories):
            for j, item in enumerate(reversed(hist.tolist())):
                entry = self._lists.get(int(item))
                if entry is not None:
                    np.add.at(out[row], entry[0], self.decay ** j * entry[1])
            top = out[row].max()
            if top > 0:
                out[row] /= top
        if self.beta > 0:
            out += self.beta * self._pop
        return out


class BrainBlendScorer:
    """The brain's ranking formula with a release, in numpy, over the whole catalog.

    The same plain functions ``omega.brain.recommender`` ranks with —
    ``view_weights`` (recency decay, abandoned views weigh less), ``crowd_scores``
    over the release's lists, ``history_similarity`` (the power mean of cosines to
    the last views, the content signal), ``scale_popularity`` and ``blend`` with the
    brain's weights — over every title, without the brain's storage, its catalog
    index and its diversification (MMR): a replica for runs where one real brain
    per user is too slow (``--brain none``), checked against the real brain on a
    subset of users (docs/quality.md).
    """

    def __init__(self, release: Release, items: Sequence[Item], embeddings: F32,
                 settings: Any = None) -> None:
        from omega.brain.settings import BrainSettings

        self._s = settings if settings is not None else BrainSettings()
        self._n = len(items)
        self._emb = embeddings
        self._lists, self._pop = resolve_release(release, items)

    @property
    def n_items(self) -> int:
        return self._n

    @property
    def has_lists(self) -> bool:
        """Whether the release has any list (the brain's popularity weight depends on it)."""
        return bool(self._lists)

    def scores(self, histories: Sequence[IntArray],
               fractions: Sequence[FloatArray] | None = None) -> FloatArray:
        """One row per history (oldest view first), with each view's watch fraction."""
        from omega.brain import recommender as rk

        r = self._s.recommender
        weights = replace(r, popularity=r.popularity_with_crowd) if self._lists else r
        zero = np.zeros(self._n, dtype=np.float32)
        out = np.zeros((len(histories), self._n), dtype=np.float64)
        crowd, content = self.signals(histories, fractions)
        pop = self.popularity_signal()
        for row in range(len(histories)):
            total, _ = rk.blend(rk.Signals(crowd[row], content[row], pop, zero, zero), weights)
            out[row] = total
        return out

    def popularity_signal(self) -> F32:
        """The release's popularity, scaled as the brain scales it."""
        from omega.brain import recommender as rk

        return rk.scale_popularity(self._pop)

    def signals(self, histories: Sequence[IntArray],
                fractions: Sequence[FloatArray] | None = None) -> tuple[F32, F32]:
        """Each history's crowd and content signals over the catalog (rows), unweighted.

        The crowd row depends on ``recency_decay``, the content row on the
        ``similar_*`` settings only: a caller trying weights reuses them.
        """
        from omega.brain import recommender as rk

        s, r = self._s, self._s.recommender
        crowd = np.zeros((len(histories), self._n), dtype=np.float32)
        content = np.zeros((len(histories), self._n), dtype=np.float32)
        for row, hist in enumerate(histories):
            h = hist[::-1][: s.history_length]
            fr = (fractions[row][::-1][: s.history_length] if fractions is not None
                  else np.ones(h.size, dtype=np.float32))
            w = rk.view_weights(fr, decay=s.recency_decay, success_threshold=s.success_threshold,
                                abandoned_weight=s.abandoned_weight)
            crowd[row], _ = rk.crowd_scores(h, w, self._lists, self._n)
            hs = h[: r.similar_history]
            v = rk.view_weights(fr[: r.similar_history], decay=r.similar_decay,
                                success_threshold=s.success_threshold,
                                abandoned_weight=s.abandoned_weight)
            content[row] = rk.history_similarity(
                (self._emb[hs] @ self._emb.T).astype(np.float32), v, r.similar_sharpness)
        return crowd, content


def neighbours_by_item(release: Release) -> dict[int, list[tuple[int, float]]]:
    """The release's lists keyed by MovieLens item id (what ``local_brain_factory`` takes)."""
    return {int(c): [(int(o), v) for o, v in lst] for c, lst in release.neighbours.items()}


def popularity_by_item(release: Release) -> Mapping[int, float]:
    return {int(c): v for c, v in release.popularity.items()}


def rank_blend(scorer: BrainBlendScorer, histories: Sequence[IntArray],
               fractions: Sequence[FloatArray], k: int) -> IntArray:
    """Top-k lists of the brain's formula, each history's own titles excluded."""
    from omega.sim.metrics import top_k

    out = np.full((len(histories), k), -1, dtype=np.int64)
    for lo in range(0, len(histories), 128):
        part = histories[lo: lo + 128]
        out[lo: lo + len(part)] = top_k(scorer.scores(part, fractions[lo: lo + 128]), part, k)
    return out
