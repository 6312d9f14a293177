"""``omega-node bench quality --federated``: the federated brain beside the central baselines.

    omega-node bench quality --federated --data ../shared/data/ml-latest-small [--json]

Every user is a TV (``omega.sim.federated``): its training views become windowed
pairs, sealed reports, shuffled and opened by the hub, summed, and released by
``omega.federation.release.build_release``. Three releases are scored, each by
the real brain (``Brain.apply_crowd`` with the release's lists and popularity,
one fresh brain per user) — the rows:

- ``federated``: the release without central noise;
- ``federated-dp``: ε per release (default 1) with the noise of the real population;
- ``federated-dp-1m``: the same ε with the noise a fleet of ``--fleet`` TVs (1 M) would see.

Beside them, in the same run: the central baselines of ``omega.sim.quality`` and
``windowed lists (central)`` — the same top-k lists computed centrally from every
training history (no report, no seal), scored in numpy as the brain's crowd path
scores them, and ``SASRec`` when PyTorch (the ``bench`` extra) is installed and
``--no-sasrec`` is not given; otherwise its reference figures from BENCHMARKS.md §1
are printed beside, marked as such.

The fleet sweep re-releases the sums with the noise of growing fleets and scores
each with the numpy crowd path; the fleet at which privacy stops costing quality
is the smallest from which every fleet of the sweep has a paired difference from
the noiseless release whose 95 % interval reaches 0 or above (not significantly
worse), for HR@10 and NDCG@10.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omega.sim.baselines import Scorer, rank
from omega.sim.federated import (
    BrainBlendScorer,
    CrowdScorer,
    FederatedSettings,
    SimulatedCrowd,
    neighbours_by_item,
    popularity_by_item,
    rank_blend,
    simulate_crowd,
)
from omega.sim.metrics import hit_ndcg, pad_lists, paired_diff
from omega.sim.movielens import History
from omega.sim.quality import (
    SASREC,
    Prepared,
    QualitySettings,
    build_report,
    prepare_and_baselines,
)
from omega.sim.replay import (
    Embedder,
    SharedEmbedder,
    local_brain_factory,
    replay_brain,
)
from omega.sim.report import MethodResult, QualityReport, SliceResult

if TYPE_CHECKING:
    from omega.brain.settings import BrainSettings

__all__ = [
    "CENTRAL_LISTS",
    "FEDERATED",
    "FEDERATED_DP",
    "FEDERATED_DP_1M",
    "BrainCrowdSettings",
    "run_federated_quality",
]

log = logging.getLogger("omega.sim")

FEDERATED = "federated"
FEDERATED_DP = "federated-dp"
FEDERATED_DP_1M = "federated-dp-1m"
CENTRAL_LISTS = "windowed lists (central)"
#: SASRec figures measured here (BENCHMARKS.md §1, fair ties), HR@10 / NDCG@10, by layout
#: and history; printed beside the run when SASRec is not run in it (no PyTorch).
SASREC_REFERENCE: dict[tuple[str, str], tuple[float, float]] = {
    ("ml-latest", "train"): (0.079, 0.039),
    ("ml-latest", "all"): (0.093, 0.044),
    ("ml-100k", "train"): (0.157, 0.084),
    ("ml-100k", "all"): (0.190, 0.097),
}
FLEETS: tuple[int, ...] = (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000,
                           10_000_000, 100_000_000)


@dataclass(frozen=True)
class BrainCrowdSettings:
    """The brain's settings for the federated rows (chosen on validation, docs/quality.md)."""

    #: The j-th most recent view weighs decay**j against the crowd's lists. Validation
    #: NDCG@10 (brain blend in numpy, content 1.5): 0.4 0.0846, 0.5 0.0859, 0.6 0.0868,
    #: 0.7 0.0818, 0.9 (the brain's default) 0.0782.
    recency_decay: float = 0.6
    #: Content similarity beside the crowd's lists: the brain's default. On validation
    #: (610 users, the brain's blend in numpy with the release's lists) 0 to 1.5 are
    #: within 0.003 NDCG@10 (1.5 best, 0.0818); the real brain on 102 validation users:
    #: 1.5 0.108 / 0.060, 0.3 0.078 / 0.048, 0 0.078 / 0.052.
    content: float = 1.5
    #: The real brain (one ``omega.Brain`` per user and release: ~1-3 s each on this
    #: shared machine, most of it opening the brain) runs on at most this many evaluated
    #: users, evenly spread by id; the rows then score every user by the brain's formula
    #: in numpy and the real brain's figures on its users are printed beside, with the
    #: formula's on the same users (``brain_check``). 0 = the real brain on every user
    #: (ml-1m: 6,040 users × 3 releases, about 10 h here).
    max_users: int = 100
    #: ... but a data set of at most this many evaluated users gets the real brain on
    #: every user (ml-latest-small's 610: 16 min; ml-100k's 943 about 25): the rows are
    #: then the product's brain itself, not its formula.
    all_users_up_to: int = 2000
    #: The crowd's popularity once lists exist: the brain's default.
    popularity: float = 0.05
    #: Choose decay, content and popularity per release on this data set's validation
    #: items (``omega.sim.blendtune``), as every baseline's parameters are; the fields
    #: above are then only the starting point (they are in the grid).
    tune: bool = True

    def brain_settings(self) -> BrainSettings:
        """These weights as ``BrainSettings`` (the benchmark's brains are not durable)."""
        from omega.brain.settings import BrainSettings, RecommenderSettings

        return BrainSettings(durability="nosync", recency_decay=self.recency_decay,
                             recommender=RecommenderSettings(
                                 content=self.content, popularity_with_crowd=self.popularity))

    def chosen(self, rel: Any, prep: Prepared, k: int) -> tuple[BrainCrowdSettings,
                                                                   dict[str, Any] | None]:
        """The settings for one release (tuned on validation when ``tune``), and the record."""
        if not self.tune:
            return self, None
        from omega.sim.blendtune import BlendGrid, tune_blend

        grid = BlendGrid()
        users = prep.users
        t = time.perf_counter()
        best, points = tune_blend(rel, prep.data.items, prep.vectors, [u.train for u in users],
                                  [u.fractions[: len(u.train)] for u in users],
                                  [u.val_item for u in users], base=self.brain_settings(),
                                  grid=grid, k=k,
                                  default=(self.recency_decay, self.content, self.popularity))
        default = next((q for q in points if (q.recency_decay, q.content, q.popularity)
                        == (self.recency_decay, self.content, self.popularity)), None)
        record = {"decay": best.recency_decay, "content": best.content,
                  "popularity": best.popularity, "val_hr": round(best.val_hr, 4),
                  "val_ndcg": round(best.val_ndcg, 4), "points": len(points),
                  "default_val_ndcg": round(default.val_ndcg, 4) if default else None,
                  "seconds": round(time.perf_counter() - t, 1)}
        return replace(self, recency_decay=best.recency_decay, content=best.content,
                       popularity=best.popularity, tune=False), record


def _crowd_row(name: str, scorer: CrowdScorer, prep: Prepared, k: int, seconds: float,
               params: dict[str, float | int]) -> MethodResult:
    hists = [u.train for u in prep.users]
    vh, vn = hit_ndcg(rank(scorer, hists, k), [u.val_item for u in prep.users])
    test = SliceResult.of(rank(scorer, prep.test_histories(), k), prep.test_targets,
                          prep.n_items)
    return MethodResult(name, params, test, None, float(vh.mean()), float(vn.mean()), seconds)


def _blend_row(name: str, rel: Any, prep: Prepared, k: int, brain: BrainCrowdSettings,
               params: dict[str, float | int], progress: bool = False) -> MethodResult:
    """A federated row scored by the brain's formula in numpy (``BrainBlendScorer``)."""
    t = time.perf_counter()
    scorer = BrainBlendScorer(rel, prep.data.items, prep.vectors, brain.brain_settings())
    users = prep.users
    n_hist = [len(h) for h in prep.test_histories()]
    val = rank_blend(scorer, [u.train for u in users],
                     [u.fractions[: len(u.train)] for u in users], k,
                     progress=f"{name} (formula), validation" if progress else "")
    vh, vn = hit_ndcg(val, [u.val_item for u in users])
    test = rank_blend(scorer, prep.test_histories(),
                      [u.fractions[:m] for u, m in zip(users, n_hist, strict=True)], k,
                      progress=f"{name} (formula), test" if progress else "")
    return MethodResult(name, params,
                        SliceResult.of(test, prep.test_targets, prep.n_items), None,
                        float(vh.mean()), float(vn.mean()), time.perf_counter() - t)


def _central_sums(prep: Prepared, fed: FederatedSettings) -> SimulatedCrowd:
    """The windowed pairs of every training history, summed directly (no report, no seal)."""
    from omega.federation.report import title_key
    from omega.federation.sums import CoviewSums
    from omega.sim.federated import tv_coviews

    t = time.perf_counter()
    sums = CoviewSums()
    for user in prep.split.users:
        for cv in tv_coviews(user, prep.data.items, fed):
            sums.add(cv)
    catalog = {title_key(str(i.id)): str(i.id) for i in prep.data.items}
    return SimulatedCrowd(sums, catalog, len(prep.split.users), sums.reports, 0,
                          time.perf_counter() - t)


def _fleet_sweep(
    crowd: SimulatedCrowd, prep: Prepared, fed: FederatedSettings, decay: float, k: int,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:
    """Quality (numpy crowd path, test item) of the release as the fleet grows."""
    from tqdm import tqdm

    targets = prep.test_targets
    hists = prep.test_histories()
    exact = CrowdScorer(crowd.release(fed, noise=False, fleet=None), prep.data.items, decay)
    eh, en = hit_ndcg(rank(exact, hists, k), targets)
    rows: list[dict[str, Any]] = []
    crossing: int | None = None
    fleets = (crowd.population, *(f for f in FLEETS if f > crowd.population))
    for fleet in tqdm(fleets, desc="fleet sweep", unit="fleet", disable=not progress):
        rel = crowd.release(fed, noise=True, fleet=fleet, seed=fed.seed)
        h, n = hit_ndcg(rank(CrowdScorer(rel, prep.data.items, decay), hists, k), targets)
        dh, dn = paired_diff(h, eh), paired_diff(n, en)
        # Free: not significantly worse than no noise (an interval above 0 is free too:
        # noise that breaks ties differently can help by chance).
        free = dh.high >= 0 and dn.high >= 0
        rows.append({
            "fleet": fleet, "hr": round(float(h.mean()), 4), "ndcg": round(float(n.mean()), 4),
            "hr_diff": round(dh.diff, 4), "hr_low": round(dh.low, 4), "hr_high": round(dh.high, 4),
            "ndcg_diff": round(dn.diff, 4), "sigma": round(rel.sigma, 4),
            "pairs": rel.pairs_published, "free": free,
        })
    # The smallest fleet from which every larger one in the sweep is free too.
    for r in reversed(rows):
        if not r["free"]:
            break
        crossing = r["fleet"]
    return rows, crossing


def run_federated_quality(
    data_dir: Path | str,
    *,
    embedder: Embedder,
    settings: QualitySettings | None = None,
    federated: FederatedSettings | None = None,
    brain: BrainCrowdSettings | None = BrainCrowdSettings(),
    progress: bool = True,
    cache_dir: Path | None = None,
    work_dir: Path | None = None,
    tune: bool = True,
) -> QualityReport:
    """The federated rows beside the baselines; ``brain=None`` scores them in numpy only.

    ``tune``: choose the brain's weights per release on the validation items
    (:meth:`BrainCrowdSettings.chosen`); False keeps ``brain``'s (the product's) weights.
    """
    s = settings or QualitySettings()
    fed = federated or FederatedSettings()
    # brain=None: the rows are scored by the brain's formula in numpy, same weights.
    weights = replace(brain if brain is not None else BrainCrowdSettings(), tune=tune)
    decay = weights.recency_decay
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prep, methods, scorers = prepare_and_baselines(data_dir, embedder, s, timings,
                                                   cold_start=False, cache_dir=cache_dir,
                                                   progress=progress)

    central = _central_sums(prep, fed)
    t = time.perf_counter()
    central_rel = central.release(fed, noise=False, fleet=None)
    methods.append(_crowd_row(CENTRAL_LISTS, CrowdScorer(central_rel, prep.data.items, decay),
                              prep, s.k, central.seconds + time.perf_counter() - t,
                              {"top_k": fed.release.top_k, "window": fed.window,
                               "decay": decay}))

    crowd = simulate_crowd(prep.split.users, prep.data.items, fed, progress=progress)
    timings["reports sealed, shuffled, opened, summed"] = crowd.seconds
    releases = {
        FEDERATED: crowd.release(fed, noise=False, fleet=None, seed=fed.seed),
        FEDERATED_DP: crowd.release(fed, noise=True, fleet=None, seed=fed.seed),
        FEDERATED_DP_1M: crowd.release(fed, noise=True, fleet=fed.fleet, seed=fed.seed),
    }
    fed_rows: list[MethodResult] = []
    other_rows: list[MethodResult] = []
    check: list[dict[str, Any]] = []
    # Too many users for one real brain each: the formula on everyone, the brain on a subset.
    subset = (brain is not None and brain.max_users > 0 and len(prep.users) > brain.max_users
              and len(prep.users) > brain.all_users_up_to)
    brain_prep = _subset(prep, brain.max_users) if brain is not None and subset else prep
    tuned: dict[str, dict[str, Any]] = {}
    for name, rel in releases.items():
        t = time.perf_counter()
        chosen, record = weights.chosen(rel, prep, s.k)
        if record is not None:
            tuned[name] = record
            timings[f"{name} weights chosen on validation"] = record["seconds"]
        params: dict[str, float | int] = {"pairs": rel.pairs_published,
                                          "titles": rel.titles_published,
                                          "decay": chosen.recency_decay,
                                          "content": chosen.content,
                                          "popularity": chosen.popularity}
        if brain is None or subset:
            fed_rows.append(_blend_row(name, rel, prep, s.k, chosen, params, progress))
        if brain is not None:
            row, other = _brain_row(name, rel, brain_prep, s, chosen, embedder, work_dir,
                                    progress)
            if subset:
                check.append(_check_row(row, fed_rows[-1], prep, brain_prep))
            else:
                fed_rows.append(row)
            other_rows.append(other)
        timings[name] = time.perf_counter() - t
    if SASREC in scorers:
        # The same model with the other test history: only the scoring differs.
        other_rows.append(_other_history_row(SASREC, scorers[SASREC], prep, s.k,
                                             next(m for m in methods if m.name == SASREC)))
    t = time.perf_counter()
    sweep, crossing = _fleet_sweep(crowd, prep, fed, decay, s.k, progress)
    timings["fleet sweep"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    info = _info(prep, fed, crowd, releases, sweep, crossing, other_rows, brain, tuned,
                 check, len(brain_prep.users), sasrec_measured=SASREC in scorers)
    report = build_report(prep, embedder, s.k, [*fed_rows, *methods], FEDERATED, timings)
    return replace(report, federated=info)


def _subset(prep: Prepared, n: int) -> Prepared:
    """``prep`` with ``n`` of its evaluated users, evenly spread by id (deterministic)."""
    rows = sorted({round(float(v)) for v in np.linspace(0, len(prep.users) - 1, n)})
    users = [prep.users[r] for r in rows]
    return replace(prep, rows=[prep.rows[r] for r in rows], users=users, cold_pos=[],
                   test_targets=[u.test_item for u in users], cold_targets=[])


def _check_row(brain_row: MethodResult, formula_row: MethodResult, prep: Prepared,
               sub: Prepared) -> dict[str, Any]:
    """The real brain against the numpy formula on the brain's users, paired."""
    where = {r: i for i, r in enumerate(prep.rows)}
    pick = np.array([where[r] for r in sub.rows], dtype=np.int64)
    fh, fn = formula_row.test.hits[pick], formula_row.test.ndcgs[pick]
    dh = paired_diff(brain_row.test.hits, fh)
    dn = paired_diff(brain_row.test.ndcgs, fn)
    return {
        "name": brain_row.name, "users": len(sub.users),
        "brain_hr": round(brain_row.test.hr, 4), "brain_ndcg": round(brain_row.test.ndcg, 4),
        "formula_hr": round(float(fh.mean()), 4), "formula_ndcg": round(float(fn.mean()), 4),
        "hr_diff": round(dh.diff, 4), "hr_low": round(dh.low, 4), "hr_high": round(dh.high, 4),
        "ndcg_diff": round(dn.diff, 4),
        "brain_val_hr": brain_row.val_hr, "brain_val_ndcg": brain_row.val_ndcg,
    }


def _other_history_row(name: str, scorer: Scorer, prep: Prepared, k: int,
                       row: MethodResult) -> MethodResult:
    """``row``'s scorer on the test item with the history the run does not use."""
    other: History = "train" if prep.history == "all" else "all"
    lists = rank(scorer, [u.test_history(other) for u in prep.users], k)
    return MethodResult(name, row.params, SliceResult.of(lists, prep.test_targets, prep.n_items),
                        None, None, None, row.seconds)


def _brain_row(
    name: str,
    rel: Any,
    prep: Prepared,
    s: QualitySettings,
    brain: BrainCrowdSettings,
    embedder: Embedder,
    work_dir: Path | None,
    progress: bool,
) -> tuple[MethodResult, MethodResult]:
    """The real brain fed the release; the row and the other history's row."""
    t = time.perf_counter()
    config = brain.brain_settings()
    factory = local_brain_factory(config, neighbours=neighbours_by_item(rel),
                                  crowd_popularity=popularity_by_item(rel))
    shared = SharedEmbedder(embedder, prep.texts, prep.vectors)
    run = replay_brain(factory, prep.users, prep.data.items, shared, k=s.k, cold_start=False,
                       work_dir=work_dir, progress=progress, label=name, history=s.history,
                       extra=True)
    seconds = time.perf_counter() - t
    vh, vn = hit_ndcg(pad_lists(run.val, s.k), [u.val_item for u in prep.users])
    params: dict[str, float | int] = {"pairs": rel.pairs_published,
                                      "titles": rel.titles_published,
                                      "content": brain.content, "decay": brain.recency_decay,
                                      "popularity": brain.popularity}
    row = MethodResult(name, params,
                       SliceResult.of(pad_lists(run.test, s.k), prep.test_targets, prep.n_items),
                       None, float(vh.mean()), float(vn.mean()), seconds)
    other = MethodResult(name, params,
                         SliceResult.of(pad_lists(run.test_other, s.k), prep.test_targets,
                                        prep.n_items),
                         None, None, None, seconds)
    return row, other


def _info(
    prep: Prepared,
    fed: FederatedSettings,
    crowd: SimulatedCrowd,
    releases: dict[str, Any],
    sweep: list[dict[str, Any]],
    crossing: int | None,
    other_rows: Sequence[MethodResult],
    brain: BrainCrowdSettings | None,
    tuned: dict[str, dict[str, Any]],
    check: Sequence[dict[str, Any]] = (),
    brain_users: int = 0,
    *,
    sasrec_measured: bool,
) -> dict[str, Any]:
    pop = crowd.population
    sas = SASREC_REFERENCE.get((prep.data.layout, prep.history))
    other_history = "train" if prep.history == "all" else "all"
    rel_info = {
        name: {
            "pairs_published": rel.pairs_published, "titles_published": rel.titles_published,
            "sigma": round(rel.sigma, 4), "threshold": round(rel.threshold, 4),
            "epsilon": None if not np.isfinite(rel.epsilon) else rel.epsilon,
        }
        for name, rel in releases.items()
    }
    settings = fed.release_settings(noise=True, fleet=None, population=pop)
    text = [
        f"Federated: {pop} TVs sent {crowd.reports} reports (window {fed.window}, "
        f"at most {fed.contributions} each, keep {fed.keep}; "
        + ("all sealed and opened" if crowd.sealed == crowd.reports else
           f"{crowd.sealed} sealed and opened, the other TVs' unsealed, as sealing changes "
           f"nothing summed") +
        f"); {crowd.batches} shuffled batches "
        f"summed in {crowd.seconds:.1f} s; {crowd.sums.n_pairs} pairs, "
        f"{crowd.sums.n_titles} titles",
        f"  release: ε {settings.epsilon} per release, δ {settings.delta}, L2 sensitivity "
        f"{settings.sensitivity:.1f}, σ {settings.sigma:.1f} at {pop} TVs, threshold "
        f"{settings.threshold_sigmas}·σ, top-{settings.top_k} lists ({settings.normalize}-"
        f"normalized), min contributors {settings.min_contributors}",
    ]
    for name, r in rel_info.items():
        text.append(f"  {name:<18} pairs {r['pairs_published']:>7}  titles "
                    f"{r['titles_published']:>6}  σ {r['sigma']:<8} threshold {r['threshold']}")
    if tuned:
        text.append("  the brain's weights, chosen per release on the validation items (never the "
                    "test item; grid of omega.sim.blendtune; the product's defaults stay unless "
                    "beaten by more than one standard error):")
        for name, r in tuned.items():
            text.append(f"    {name:<18} decay {r['decay']}  content {r['content']}  popularity "
                        f"{r['popularity']}  validation HR@10 {r['val_hr']:.3f} NDCG@10 "
                        f"{r['val_ndcg']:.4f} (defaults {r['default_val_ndcg']}) "
                        f"[{r['points']} points, {r['seconds']} s]")
    if brain is not None and check:
        text.append(f"  rows above: every one of the {len(prep.users)} users scored by the "
                    f"brain's formula in numpy (BrainBlendScorer, the weights above); the real "
                    f"omega.Brain (same weights, the release via apply_crowd) on {brain_users} "
                    f"of them, evenly spread by id:")
        for c in check:
            text.append(f"    {c['name']:<18} brain HR@10 {c['brain_hr']:.3f} NDCG@10 "
                        f"{c['brain_ndcg']:.3f} | formula, same users, {c['formula_hr']:.3f} / "
                        f"{c['formula_ndcg']:.3f} | brain − formula HR {c['hr_diff']:+.3f} "
                        f"[{c['hr_low']:+.3f}, {c['hr_high']:+.3f}]")
    elif brain is not None:
        text.append(f"  brain: start weights decay {brain.recency_decay}, content "
                    f"{brain.content}, popularity {brain.popularity} (the release's lists and "
                    "popularity via apply_crowd)")
    else:
        text.append("  federated rows scored by the brain's formula in numpy (BrainBlendScorer: "
                    "omega.brain.recommender over every title, no MMR), not one brain per user")
    for row in other_rows:
        text.append(f"  {row.name} with history {other_history} ({row.test.users} "
                    f"users): HR@10 {row.test.hr:.3f} "
                    f"NDCG@10 {row.test.ndcg:.3f}")
    if sas is not None and not sasrec_measured:
        text.append(f"  SASRec (reference figure from BENCHMARKS.md §1, not run here: no "
                    f"PyTorch): HR@10 {sas[0]:.3f} NDCG@10 {sas[1]:.3f}")
    text.append("  Fleet sweep (numpy crowd path, ε per release as above; diff vs no noise):")
    for r in sweep:
        text.append(f"    {r['fleet']:>11,} TVs  HR@10 {r['hr']:.3f} NDCG@10 {r['ndcg']:.3f}  "
                    f"HR diff {r['hr_diff']:+.3f} [{r['hr_low']:+.3f}, {r['hr_high']:+.3f}]  "
                    f"σ {r['sigma']:<8} pairs {r['pairs']}" + ("  (free)" if r["free"] else ""))
    text.append(
        f"  privacy stops costing quality at {crossing:,} TVs" if crossing is not None
        else f"  privacy still costs quality at {FLEETS[-1]:,} TVs")
    return {
        "tvs": pop,
        "reports": crowd.reports,
        "batches": crowd.batches,
        "window": fed.window,
        "contributions": fed.contributions,
        "keep": fed.keep,
        "scored_by": ("omega.Brain per user" if brain is not None and not check
                      else "brain formula (numpy)"),
        "sealed_reports": crowd.sealed,
        "brain_check": {"users": brain_users, "rows": list(check)} if check else None,
        "epsilon": settings.epsilon,
        "delta": settings.delta,
        "top_k": settings.top_k,
        "sensitivity": round(settings.sensitivity, 4),
        "releases": rel_info,
        "other_history": {
            "history": other_history,
            "methods": [{"name": r.name, "hr": r.test.hr, "ndcg": r.test.ndcg}
                        for r in other_rows],
        },
        "weights_chosen_on_validation": tuned,
        # The figures of BENCHMARKS.md §1; measured: a SASRec row was run in this report.
        "sasrec_reference": ({"hr": sas[0], "ndcg": sas[1], "measured": sasrec_measured}
                             if sas else None),
        "fleet_sweep": sweep,
        "free_at_fleet": crossing,
        "text": text,
    }
