"""The recommendation-quality benchmark (BENCHMARKS.md §1): the brain beside the baselines.

    omega-node bench quality --data ../shared/data/ml-latest-small [--json]
    python -m omega.sim.quality --data ../shared/data/ml-latest-small --brain none

:func:`run_quality` loads a MovieLens folder, splits it by the protocol, tunes
every baseline on the validation items, scores the test items (and the
cold-start slice), replays every user through a fresh brain of its own
(``omega.sim.replay``), and returns a ``QualityReport`` (``omega.sim.report``:
printed by ``format_text`` or as JSON).

With ``crowd_variants`` the real brain is also replayed with what federation
would send it, computed centrally from every training history (no privacy, no
noise): catalog popularity, and per-title co-view neighbour lists. Those rows
are labelled ``[crowd]``; the plain ``brain`` row knows only its own user.

With ``QualitySettings.held_out_positions`` > 0 (default 10) the brain and the
content baseline are also scored on earlier positions of each history that no
tuning used (``omega.sim.replay.held_out_positions``), asked in the same replay,
and compared with a CI clustered by user (``HeldOutResult``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.errors import OmegaError
from omega.schema import SettingError, require
from omega.sim import sasrec as sasrec_lib
from omega.sim.baselines import (
    Baseline,
    Scorer,
    TrainData,
    cold_start_lists,
    default_baselines,
    rank,
    tune,
)
from omega.sim.metrics import (
    clustered_paired_diff,
    pad_lists,
    paired_diff,
)
from omega.sim.movielens import (
    HISTORIES,
    DatasetError,
    History,
    Item,
    MovieLens,
    Split,
    UserHistory,
    load_movielens,
    split_leave_last,
)
from omega.sim.replay import (
    BrainFactory,
    BrainRun,
    Embedder,
    QualityError,
    SharedEmbedder,
    catalog_embeddings,
    default_cache_dir,
    embedder_key,
    held_out_positions,
    local_brain_factory,
    replay_brain,
)
from omega.sim.report import (
    BRAIN,
    CROWD_LISTS,
    CROWD_POPULARITY,
    HELD_OUT_BASELINE,
    Comparison,
    HeldOutResult,
    MethodResult,
    QualityReport,
    SliceResult,
    format_text,
)

__all__ = [
    "QualitySettings",
    "add_arguments",
    "main",
    "run_from_args",
    "run_quality",
]

log = logging.getLogger("omega.sim")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Compared against the others when no brain runs: the strongest central baseline.
FALLBACK_REFERENCE = "EASE + recency"
#: Neighbours per title in the central co-view lists (as the hub publishes, DESIGN §7).
CROWD_NEIGHBOURS = 20
#: The sequential baseline's row (``omega.sim.sasrec``; needs the ``bench`` extra).
SASREC = "SASRec"


@dataclass(frozen=True)
class QualitySettings:
    """Knobs of the run. The protocol itself (split, mapping, k) is fixed by BENCHMARKS.md §1."""

    k: int = 10
    #: The j-th most recent history item weighs decay**j (EASE + recency, content).
    recency_decay: float = 0.9
    ease_lambdas: tuple[float, ...] = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
    knn_neighbours: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    content_last_n: tuple[int, ...] = (1, 3, 5, 10, 20, 50)
    content_popularity: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    #: Cold-start baselines are fitted without the scored users, in this many folds.
    cold_folds: int = 10
    #: Evaluate this many users (evenly spaced by id); 0 = all. Models still train on all.
    max_users: int = 0
    #: Held-out positions per user (targets items[-5], items[-6], ...); 0 = off.
    held_out_positions: int = 10
    #: The test item's history: "all" (B: training + validation item, what a TV
    #: knows; the product's figure) or "train" (A: two steps ahead).
    history: History = "all"
    #: SASRec's settings, run when PyTorch (the ``bench`` extra) is installed; None = off.
    sasrec: sasrec_lib.SASRecSettings | None = field(default_factory=sasrec_lib.SASRecSettings)

    def __post_init__(self) -> None:
        require(1 <= self.k <= 1000, "k", "must be 1-1000")
        require(0.0 < self.recency_decay <= 1.0, "recency_decay", "must be in (0, 1]")
        require(
            len(self.ease_lambdas) > 0 and all(v > 0 for v in self.ease_lambdas),
            "ease_lambdas",
            "must be a non-empty list of positive numbers",
        )
        require(
            len(self.knn_neighbours) > 0 and all(v >= 1 for v in self.knn_neighbours),
            "knn_neighbours",
            "must be a non-empty list of integers >= 1",
        )
        require(
            len(self.content_last_n) > 0 and all(v >= 1 for v in self.content_last_n),
            "content_last_n",
            "must be a non-empty list of integers >= 1",
        )
        require(
            len(self.content_popularity) > 0 and all(v > 0 for v in self.content_popularity),
            "content_popularity",
            "must be a non-empty list of positive numbers",
        )
        require(2 <= self.cold_folds <= 1000, "cold_folds", "must be 2-1000")
        require(self.max_users >= 0, "max_users", "must be >= 0 (0 = every user)")
        require(
            0 <= self.held_out_positions <= 1000, "held_out_positions", "must be 0-1000 (0 = off)"
        )
        require(self.history in HISTORIES, "history", "must be 'all' (B) or 'train' (A)")


# -- the run --------------------------------------------------------------------------------


@dataclass(eq=False)
class Prepared:
    """The loaded data set, its split, the catalog embeddings and the evaluated users."""

    data: MovieLens
    split: Split
    texts: list[str]
    vectors: F32
    cached: bool
    rows: list[int]
    users: list[UserHistory]
    cold_pos: list[int]
    test_targets: list[int]
    cold_targets: list[int]
    history: History

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def test_histories(self) -> list[IntArray]:
        return [u.test_history(self.history) for u in self.users]

    def train_data(self) -> TrainData:
        return TrainData(self.split.train_matrix(), self.vectors)


def prepare(
    data_dir: Path | str,
    embedder: Embedder,
    s: QualitySettings,
    *,
    cold_start: bool,
    cache_dir: Path | None,
    progress: bool,
) -> Prepared:
    """Load and split the data, embed the catalog, pick the evaluated users."""
    data = load_movielens(data_dir)
    split = split_leave_last(data)
    if not split.users:
        raise DatasetError(data.path, "no user has at least 5 interactions")
    texts = data.texts()
    vectors, cached = catalog_embeddings(
        texts, embedder, cache_dir or default_cache_dir(), progress=progress
    )
    rows = _evaluated_rows(len(split.users), s.max_users)
    users = [split.users[r] for r in rows]
    cold_pos = [i for i, u in enumerate(users) if u.has_cold] if cold_start else []
    return Prepared(
        data, split, texts, vectors, cached, rows, users, cold_pos,
        [u.test_item for u in users], [users[i].cold_item for i in cold_pos], s.history,
    )  # fmt: skip


def run_baselines(
    prep: Prepared, s: QualitySettings, *, progress: bool
) -> tuple[list[MethodResult], dict[str, Scorer]]:
    """Every central baseline, tuned on validation, scored on test (and cold start)."""
    from tqdm import tqdm

    methods: list[MethodResult] = []
    scorers: dict[str, Scorer] = {}
    train = prep.train_data()
    baselines = default_baselines(
        decay=s.recency_decay,
        ease_lambdas=s.ease_lambdas,
        knn_neighbours=s.knn_neighbours,
        content_last_n=s.content_last_n,
        content_popularity=s.content_popularity,
    )
    bar = tqdm(baselines, desc="baselines", unit="method", disable=not progress, file=sys.stderr)
    for baseline in bar:
        bar.set_postfix_str(baseline.name)
        result, scorers[baseline.name] = _run_baseline(baseline, prep, train, s)
        methods.append(result)
        log.info(
            "baseline done",
            extra={"fields": {"method": baseline.name, "seconds": round(result.seconds, 2)}},
        )
    if s.sasrec is not None:
        if sasrec_lib.available():
            result, scorers[SASREC] = _run_sasrec(prep, s.sasrec, s, progress=progress)
            methods.append(result)
        else:
            log.info("baseline skipped", extra={"fields": {
                "method": SASREC, "reason": "PyTorch not installed (the bench extra)"}})
    return methods, scorers


def _run_sasrec(
    prep: Prepared, settings: sasrec_lib.SASRecSettings, s: QualitySettings, *, progress: bool
) -> tuple[MethodResult, Scorer]:
    """SASRec trained on every training history, stopped on every validation item.

    No cold-start slice: refitting it per fold (as the other baselines are, so a
    user's own 6th view is not in the model) would cost the fit ``cold_folds`` times.
    """
    t = time.perf_counter()
    users = prep.split.users
    fit = sasrec_lib.fit_sasrec(
        [u.train for u in users], prep.n_items, [u.train for u in users],
        [u.val_item for u in users], k=s.k, settings=settings, progress=progress,
    )  # fmt: skip
    test = SliceResult.of(
        rank(fit.scorer, prep.test_histories(), s.k), prep.test_targets, prep.n_items
    )
    params: dict[str, float | int] = {
        "epochs": fit.best_epoch, "hidden": settings.hidden, "blocks": settings.blocks,
        "heads": settings.heads, "maxlen": settings.maxlen, "dropout": settings.dropout,
    }  # fmt: skip
    result = MethodResult(SASREC, params, test, None, fit.val_hr, fit.val_ndcg,
                          time.perf_counter() - t)
    log.info("baseline done", extra={"fields": {
        "method": SASREC, "seconds": round(result.seconds, 2), "epochs": len(fit.epochs),
        "best_epoch": fit.best_epoch}})
    return result, fit.scorer


def prepare_and_baselines(
    data_dir: Path | str,
    embedder: Embedder,
    s: QualitySettings,
    timings: dict[str, float],
    *,
    cold_start: bool,
    cache_dir: Path | None,
    progress: bool,
) -> tuple[Prepared, list[MethodResult], dict[str, Scorer]]:
    """:func:`prepare`, then :func:`run_baselines`, timing both into ``timings``."""
    t0 = time.perf_counter()
    prep = prepare(data_dir, embedder, s, cold_start=cold_start, cache_dir=cache_dir,
                   progress=progress)
    timings["load and embed"] = time.perf_counter() - t0
    methods, scorers = run_baselines(prep, s, progress=progress)
    timings["baselines"] = sum(m.seconds for m in methods if m.name != SASREC)
    if SASREC in scorers:
        timings[SASREC] = next(m.seconds for m in methods if m.name == SASREC)
    return prep, methods, scorers


def run_quality(
    data_dir: Path | str,
    *,
    brain_factory: BrainFactory | None,
    embedder: Embedder,
    cold_start: bool = True,
    progress: bool = True,
    settings: QualitySettings | None = None,
    cache_dir: Path | None = None,
    work_dir: Path | None = None,
    crowd_variants: bool = False,
) -> QualityReport:
    """Run the benchmark; ``brain_factory=None`` runs the baselines only.

    ``crowd_variants`` adds the real brain fed with central crowd knowledge (the
    ``[crowd]`` rows, test slice only). Raises :class:`DatasetError` for an
    unreadable data folder and :class:`QualityError` when the run cannot proceed.
    """
    s = settings or QualitySettings()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prep, methods, scorers = prepare_and_baselines(
        data_dir, embedder, s, timings, cold_start=cold_start, cache_dir=cache_dir,
        progress=progress,
    )  # fmt: skip
    brain_info: dict[str, Any] | None = None
    held_out: HeldOutResult | None = None
    if brain_factory is not None:
        rows, brain_info, held_out = _brain_rows(
            prep, brain_factory, embedder, s, methods, scorers, timings,
            crowd_variants=crowd_variants, work_dir=work_dir, progress=progress,
        )  # fmt: skip
        methods[0:0] = rows
    timings["total"] = time.perf_counter() - t0
    reference = BRAIN if brain_factory is not None else FALLBACK_REFERENCE
    return build_report(prep, embedder, s.k, methods, reference, timings, brain_info, held_out)


def build_report(
    prep: Prepared,
    embedder: Embedder,
    k: int,
    methods: list[MethodResult],
    reference: str,
    timings: dict[str, float],
    brain_info: dict[str, Any] | None = None,
    held_out: HeldOutResult | None = None,
) -> QualityReport:
    """The report of a run, with every method compared with ``reference``."""
    return QualityReport(
        data_dir=str(prep.data.path),
        layout=prep.data.layout,
        n_users=len(prep.split.users),
        n_items=prep.n_items,
        n_interactions=prep.data.n_interactions,
        evaluated_users=len(prep.users),
        cold_users=len(prep.cold_pos),
        k=k,
        embedder=embedder_key(embedder),
        embeddings_cached=prep.cached,
        methods=tuple(methods),
        reference=reference,
        comparisons=tuple(_compare(methods, reference)),
        timings=timings,
        brain=brain_info,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        held_out=held_out,
        history=prep.history,
    )


def _brain_rows(
    prep: Prepared,
    brain_factory: BrainFactory,
    embedder: Embedder,
    s: QualitySettings,
    methods: list[MethodResult],
    scorers: dict[str, Scorer],
    timings: dict[str, float],
    *,
    crowd_variants: bool,
    work_dir: Path | None,
    progress: bool,
) -> tuple[list[MethodResult], dict[str, Any], HeldOutResult | None]:
    """The plain brain (and the ``[crowd]`` rows), replayed user by user."""
    users, n = prep.users, prep.n_items
    cold_start = bool(prep.cold_pos)
    t = time.perf_counter()
    shared = SharedEmbedder(embedder, prep.texts, prep.vectors)
    # Every replay (the plain brain, the [crowd] rows) sees the same users and catalog.
    replay = partial(replay_brain, users=users, items=prep.data.items, embedder=shared, k=s.k,
                     work_dir=work_dir, progress=progress, history=s.history)
    run = replay(brain_factory, cold_start=cold_start, held_out=s.held_out_positions)
    seconds = time.perf_counter() - t
    timings["brain"] = seconds
    held_out: HeldOutResult | None = None
    if s.held_out_positions > 0:
        t = time.perf_counter()
        held_out = _held_out(
            run,
            users,
            scorers[HELD_OUT_BASELINE],
            next(m.params for m in methods if m.name == HELD_OUT_BASELINE),
            s,
            n,
        )
        timings["held-out content"] = time.perf_counter() - t
    cold_lists = pad_lists(run.cold, s.k) if cold_start else None
    crowd_rows: list[MethodResult] = []
    if crowd_variants:
        for name, factory in _crowd_factories(prep.data.items, prep.train_data()):
            t = time.perf_counter()
            crowd_run = replay(factory, cold_start=False, label=name)
            took = time.perf_counter() - t
            timings[name] = took
            test = SliceResult.of(pad_lists(crowd_run.test, s.k), prep.test_targets, n)
            crowd_rows.append(MethodResult(name, {}, test, None, None, None, took))
    rows = [
        MethodResult(
            BRAIN,
            {},
            SliceResult.of(pad_lists(run.test, s.k), prep.test_targets, n),
            SliceResult.of(cold_lists, prep.cold_targets, n) if cold_lists is not None else None,
            None,
            None,
            seconds,
        ),
        *crowd_rows,
    ]
    per_user = np.asarray(run.seconds)
    info = {
        "users": len(users),
        "seconds": round(seconds, 3),
        "seconds_per_user_p50": round(float(np.median(per_user)), 4),
        "seconds_per_user_p99": round(float(np.quantile(per_user, 0.99)), 4),
        "foreign_ids": run.foreign,
        "watched_items": run.watched,
        "embed_hits": shared.hits,
        "embed_misses": shared.misses,
    }
    return rows, info, held_out


def _held_out(
    run: BrainRun,
    users: Sequence[UserHistory],
    content: Scorer,
    content_params: dict[str, float | int],
    s: QualitySettings,
    n_items: int,
) -> HeldOutResult:
    """Score the brain's held-out lists and the content baseline's on the same cases.

    Only the content baseline: it is fitted on embeddings alone, while every
    collaborative baseline is fitted on training histories that contain these
    targets. Its parameters are those tuned on validation, as for the test.
    """
    t = time.perf_counter()
    histories: list[IntArray] = []
    targets: list[int] = []
    groups: list[int] = []
    for row, user in enumerate(users):
        for seen, target in held_out_positions(len(user.items), s.held_out_positions):
            histories.append(user.items[:seen])
            targets.append(int(user.items[target]))
            groups.append(row)
    if len(run.held_out) != len(targets):
        raise QualityError(f"{len(run.held_out)} held-out brain lists for {len(targets)} cases")
    brain = SliceResult.of(pad_lists(run.held_out, s.k), targets, n_items)
    other = SliceResult.of(rank(content, histories, s.k), targets, n_items)
    return HeldOutResult(
        positions=s.held_out_positions,
        users=len(set(groups)),
        brain=brain,
        content=other,
        content_params=dict(content_params),
        hr=clustered_paired_diff(brain.hits, other.hits, groups),
        ndcg=clustered_paired_diff(brain.ndcgs, other.ndcgs, groups),
        brain_seconds=run.held_out_seconds,
        content_seconds=time.perf_counter() - t,
    )


def _crowd_factories(
    items: Sequence[Item], train: TrainData
) -> list[tuple[str, BrainFactory]]:
    """The brain with what federation would send, from every training history, centrally.

    Popularity: each title's training count. Lists: each title's
    ``CROWD_NEIGHBOURS`` most co-viewed titles (cosine of the item columns, as
    item-kNN uses), unprotected: an upper bound on the private lists. Both see
    the scored users' own training views, so there is no cold-start slice.
    """
    counts = train.counts()
    popularity = {item.id: float(counts[pos]) for pos, item in enumerate(items)}
    idx, val = train.knn_lists(CROWD_NEIGHBOURS, np.arange(len(items), dtype=np.int64))
    neighbours = {
        items[pos].id: [
            (items[int(j)].id, float(v))
            for j, v in zip(idx[pos], val[pos], strict=True)
            if j >= 0 and v > 0
        ]
        for pos in range(len(items))
    }
    neighbours = {item: lst for item, lst in neighbours.items() if lst}
    return [
        (CROWD_POPULARITY, local_brain_factory(popularity=popularity)),
        (CROWD_LISTS, local_brain_factory(neighbours=neighbours)),
    ]


def _evaluated_rows(n_users: int, max_users: int) -> list[int]:
    if max_users == 0 or max_users >= n_users:
        return list(range(n_users))
    return sorted({round(float(v)) for v in np.linspace(0, n_users - 1, max_users)})


def _run_baseline(
    baseline: Baseline, prep: Prepared, train: TrainData, s: QualitySettings
) -> tuple[MethodResult, Scorer]:
    """The baseline's results and its scorer, as tuned on validation."""
    t = time.perf_counter()
    split, users = prep.split, prep.users
    # Tuned on every user's validation item, whatever subset is evaluated.
    tuned = tune(
        baseline,
        train,
        [u.train for u in split.users],
        [u.val_item for u in split.users],
        s.k,
    )
    test = SliceResult.of(
        rank(tuned.scorer, prep.test_histories(), s.k), prep.test_targets, train.n_items
    )
    cold = None
    if prep.cold_pos:
        lists = cold_start_lists(
            baseline,
            tuned.params,
            train.x,
            train.embeddings,
            [prep.rows[i] for i in prep.cold_pos],
            [users[i].cold_history for i in prep.cold_pos],
            s.k,
            s.cold_folds,
        )
        cold = SliceResult.of(lists, prep.cold_targets, train.n_items)
    result = MethodResult(
        baseline.name,
        dict(tuned.params),
        test,
        cold,
        tuned.val_hr,
        tuned.val_ndcg,
        time.perf_counter() - t,
    )
    return result, tuned.scorer


def _compare(methods: Sequence[MethodResult], reference: str) -> Iterable[Comparison]:
    ref = next((m for m in methods if m.name == reference), None)
    if ref is None:
        return
    for other in methods:
        if other is ref:
            continue
        for slice_name, a, b in (("test", ref.test, other.test), ("cold", ref.cold, other.cold)):
            if a is None or b is None:
                continue
            yield Comparison(reference, other.name, slice_name, "HR", paired_diff(a.hits, b.hits))
            yield Comparison(
                reference, other.name, slice_name, "NDCG", paired_diff(a.ndcgs, b.ndcgs)
            )


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``omega-node bench quality``."""
    parser.add_argument("--data", required=True, type=Path, help="MovieLens folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--brain",
        choices=("local", "none"),
        default="local",
        help="local: one omega.Brain per user (default); none: baselines only",
    )
    parser.add_argument(
        "--embedder",
        choices=("onnx", "hash"),
        default="onnx",
        help="onnx: the shipped MiniLM model (default); hash: the fast deterministic fake",
    )
    parser.add_argument("--max-users", type=int, default=0, help="evaluate N users (0 = all)")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold-start slice")
    parser.add_argument(
        "--history",
        choices=HISTORIES,
        default=QualitySettings.history,
        help="the test item's history: all = training + validation item (B, what a TV "
        "knows; default), train = training only (A, two steps ahead)",
    )
    parser.add_argument(
        "--held-out-positions",
        type=int,
        default=QualitySettings.held_out_positions,
        metavar="N",
        help="also score the brain and the content baseline on targets items[-5] .. "
        "items[-4-N] of each user, two steps ahead (no test or tuning target; default "
        "%(default)s, 0 = off)",
    )
    parser.add_argument(
        "--crowd-variants",
        action="store_true",
        help="also replay the brain fed with central crowd popularity and co-view lists "
        "(labelled [crowd]; each is another full replay)",
    )
    parser.add_argument(
        "--federated",
        action="store_true",
        help="replay every user as a TV through the real report, seal, shuffle, sum and "
        "release code and score the brain with each release: rows federated (no noise), "
        "federated-dp (ε per release at the real population), federated-dp-1m (noise of "
        "--fleet TVs), beside the central baselines",
    )
    parser.add_argument("--epsilon", type=float, default=1.0,
                        help="with --federated: ε per release (default %(default)s)")
    parser.add_argument("--fleet", type=int, default=1_000_000,
                        help="with --federated: the simulated fleet of federated-dp-1m")
    parser.add_argument("--top-k", type=int, default=None, metavar="K",
                        help="with --federated: neighbours per title in the releases (default "
                        "50, chosen on validation; the hub publishes [hub.release] top_k, 20 "
                        "by default, for pull size)")
    parser.add_argument("--brain-users", type=int, default=100, metavar="N",
                        help="with --federated and --brain local, on data of more than 2,000 "
                        "users: the real brain on N users evenly spread by id, the brain's "
                        "formula in numpy on every user (default %(default)s; 0 = the real "
                        "brain on every user; up to 2,000 users it always runs on every user)")
    parser.add_argument("--no-tune", action="store_true",
                        help="with --federated: keep the brain's default weights instead of "
                             "choosing decay, content and popularity weights per release on "
                             "the validation items (as every baseline's parameters are)")
    parser.add_argument(
        "--no-sasrec",
        action="store_true",
        help="skip the SASRec baseline (run by default when PyTorch, the bench extra, is "
        "installed; its fit takes minutes)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder")
    parser.add_argument("--work-dir", type=Path, default=None, help="where brains are created")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Run from parsed options; prints the report, returns the exit code (2: bad input)."""
    try:
        settings = QualitySettings(
            max_users=args.max_users,
            held_out_positions=args.held_out_positions,
            history=args.history,
            sasrec=None if args.no_sasrec else sasrec_lib.SASRecSettings(),
        )
        cache_dir = args.cache_dir or default_cache_dir()
        embedder = _make_embedder(args.embedder, cache_dir)
        if args.federated:
            return _run_federated(args, settings, embedder, cache_dir)
        factory = local_brain_factory() if args.brain == "local" else None
        if args.crowd_variants and factory is None:
            raise QualityError("--crowd-variants needs --brain local")
        report = run_quality(
            args.data,
            brain_factory=factory,
            embedder=embedder,
            cold_start=not args.no_cold_start,
            progress=not args.no_progress,
            settings=settings,
            cache_dir=cache_dir,
            work_dir=args.work_dir,
            crowd_variants=args.crowd_variants,
        )
    except (OmegaError, SettingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_text(report))
    return 0


def _run_federated(
    args: argparse.Namespace, settings: QualitySettings, embedder: Embedder, cache_dir: Path
) -> int:
    from dataclasses import replace

    from omega.sim.fedbench import BrainCrowdSettings, run_federated_quality
    from omega.sim.federated import FederatedSettings

    if args.crowd_variants:
        raise QualityError("--federated replaces --crowd-variants: give one of them")
    from omega.federation.release import ReleaseError

    if args.fleet < 1:
        raise QualityError(f"--fleet must be >= 1, got {args.fleet}")
    if args.brain_users < 0:
        raise QualityError(f"--brain-users must be >= 0, got {args.brain_users}")
    fed = FederatedSettings(fleet=args.fleet)
    try:
        top_k = fed.release.top_k if args.top_k is None else args.top_k
        fed = replace(fed, release=replace(fed.release, epsilon=args.epsilon, top_k=top_k))
    except ReleaseError as exc:
        raise QualityError(f"--epsilon or --top-k: {exc}") from None
    report = run_federated_quality(
        args.data,
        embedder=embedder,
        settings=settings,
        federated=fed,
        brain=BrainCrowdSettings(max_users=args.brain_users) if args.brain == "local" else None,
        progress=not args.no_progress,
        cache_dir=cache_dir,
        work_dir=args.work_dir,
        tune=not args.no_tune,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_text(report))
    return 0


def _make_embedder(kind: str, cache_dir: Path) -> Embedder:
    try:
        from omega.brain import embedder as emb
    except ImportError as exc:
        raise QualityError(f"the embedder package is not available ({exc})") from exc
    if kind == "hash":
        made: Embedder = emb.HashEmbedder()
        return made
    made = emb.OnnxEmbedder.from_settings(emb.EmbedderSettings(), cache_dir / "model")
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m omega.sim.quality",
        description="Recommendation quality on MovieLens (BENCHMARKS.md §1).",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
