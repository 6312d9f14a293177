"""The recommendation-quality benchmark (BENCHMARKS.md §1): the brain beside the baselines.

    omega-node bench quality --data ../shared/data/ml-latest-small [--json]
    python -m omega.sim.quality --data ../shared/data/ml-latest-small --brain none

:func:`run_quality` loads a MovieLens folder, splits it by the protocol, tunes
every baseline on the validation items, scores the test items (and the
cold-start slice), replays every user through a fresh brain of its own, and
returns a :class:`QualityReport` (printed by :func:`format_text` or as JSON).

The brain is reached only through ``brain_factory(data_dir, embedder) ->
BrainSession``, so this module does not depend on the brain's internals;
:func:`local_brain_factory` adapts ``omega.Brain``. The catalog is embedded
once (cached on disk by a hash of the texts and the model) and every brain gets
a :class:`SharedEmbedder` that answers catalog texts from that matrix. A
persistent factory (the real brain) stores the catalog once, in a template
folder that each user's brain starts from as a copy.

With ``crowd_variants`` the real brain is also replayed with what federation
would send it, computed centrally from every training history (no privacy, no
noise): catalog popularity, and per-title co-view neighbour lists. Those rows
are labelled ``[crowd]``; the plain ``brain`` row knows only its own user.

With ``QualitySettings.held_out_positions`` > 0 (default 10) the brain and the
content baseline are also scored on earlier positions of each history that no
tuning used (:func:`held_out_positions`), asked in the same replay, and compared
with a CI clustered by user (:class:`HeldOutResult`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from omega.errors import OmegaError
from omega.schema import SettingError, require
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
    PairedDiff,
    clustered_paired_diff,
    coverage,
    hit_ndcg,
    mean_se,
    pad_lists,
    paired_diff,
)
from omega.sim.movielens import (
    COLD_HISTORY,
    DatasetError,
    Item,
    Split,
    UserHistory,
    load_movielens,
    split_leave_last,
)

__all__ = [
    "BrainFactory",
    "BrainSession",
    "HeldOutResult",
    "QualityError",
    "QualityReport",
    "QualitySettings",
    "SharedEmbedder",
    "add_arguments",
    "catalog_embeddings",
    "format_text",
    "held_out_positions",
    "local_brain_factory",
    "main",
    "run_from_args",
    "run_quality",
]

log = logging.getLogger("omega.sim")

F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BRAIN = "brain"
#: Compared against the others when no brain runs: the strongest central baseline.
FALLBACK_REFERENCE = "EASE + recency"
_PROBE = "Heat (1995). Genres: Action, Crime, Thriller"


class QualityError(OmegaError):
    """The benchmark cannot run as asked (a missing component, bad options, a failing brain)."""


class Embedder(Protocol):
    """``omega.brain.embedder.Embedder``: float32 (n, dim), rows L2-normalized."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> F32: ...


class BrainSession(Protocol):
    """One TV's brain as the runner drives it. Item ids are MovieLens ids."""

    def add_content(self, items: Sequence[Item]) -> None: ...

    def observe(self, item_id: int, watch_fraction: float, timestamp: float) -> None: ...

    def recommend(self, k: int, timestamp: float) -> Sequence[int]:
        """Up to ``k`` item ids, best first."""
        ...

    def close(self) -> None: ...


#: ``factory(data_dir, embedder)``: a fresh brain in an empty directory of its own.
#: A factory with a true ``persistent`` attribute promises that a brain opened on
#: a copy of another brain's closed folder starts with that brain's catalog.
BrainFactory = Callable[[Path, Embedder], BrainSession]
#: Rows of the brain fed with crowd knowledge (the plain ``brain`` row has none).
CROWD_POPULARITY = "brain + popularity [crowd]"
CROWD_LISTS = "brain + co-view lists [crowd]"
#: Neighbours per title in the central co-view lists (as the hub publishes, DESIGN §7).
CROWD_NEIGHBOURS = 20
#: The nearest held-out target is ``items[-HELD_OUT_FIRST]``: items[-1] is the test
#: item, items[-2..-4] are targets the brain was tuned on.
HELD_OUT_FIRST = 5
#: A held-out case needs a history of at least this many views.
HELD_OUT_MIN_HISTORY = 5
#: The one baseline scored on held-out positions: it is fitted on embeddings only. The
#: collaborative ones are fitted on training histories that contain these targets.
HELD_OUT_BASELINE = "content"
_HELD_OUT_SLICE = "held-out"


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


def held_out_positions(n_views: int, positions: int) -> list[tuple[int, int]]:
    """A user's held-out cases as ``(views seen, target position)``, nearest the end first.

    For ``back`` in ``5 .. 4 + positions`` the target is ``views[-back]`` and the
    history ``views[:-back - 1]``: two steps ahead, as the test item is (the view
    in between is not seen). A case is kept only if its history has at least 5
    views. No target is a test or tuning target: those are ``views[-1..-4]``, and
    the cold-start slices' ``views[4]`` and ``views[5]`` (a target here is at
    position 6 or later).
    """
    out: list[tuple[int, int]] = []
    for back in range(HELD_OUT_FIRST, HELD_OUT_FIRST + max(positions, 0)):
        target = n_views - back
        seen = target - 1
        if seen < HELD_OUT_MIN_HISTORY:
            break
        out.append((seen, target))
    return out


# -- catalog embeddings -----------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omega" / "quality"


def embedder_key(embedder: Embedder) -> str:
    """Names the model: its id if it has one, plus a probe vector (changes with any weights)."""
    model_id = str(getattr(embedder, "model_id", "") or type(embedder).__qualname__)
    probe = np.asarray(embedder.embed([_PROBE]), dtype=np.float32)
    rounded = np.round(probe.astype(np.float64), 4).tobytes()
    return f"{model_id}/{embedder.dim}/{hashlib.sha256(rounded).hexdigest()[:16]}"


def catalog_embeddings(
    texts: Sequence[str], embedder: Embedder, cache_dir: Path, *, progress: bool = False
) -> tuple[F32, bool]:
    """The ``(len(texts), dim)`` embeddings of ``texts``; True if read from the cache.

    The cache file is named by a hash of the model key and every text, so a
    changed catalog or model is a miss, never a wrong hit.
    """
    digest = hashlib.sha256(embedder_key(embedder).encode())
    for text in texts:
        digest.update(b"\x00" + text.encode())
    path = cache_dir / f"catalog-{digest.hexdigest()[:24]}.npy"
    with contextlib.suppress(OSError, ValueError):
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(texts), embedder.dim) and cached.dtype == np.float32:
            return cached, True
    embed_catalog = getattr(embedder, "embed_catalog", None)
    if callable(embed_catalog):
        vecs = np.asarray(embed_catalog(list(texts), progress=progress), dtype=np.float32)
    else:
        vecs = np.concatenate(
            [
                np.asarray(embedder.embed(texts[i : i + 256]), dtype=np.float32)
                for i in range(0, len(texts), 256)
            ]
            or [np.zeros((0, embedder.dim), dtype=np.float32)]
        )
    if vecs.shape != (len(texts), embedder.dim) or not np.isfinite(vecs).all():
        raise QualityError(f"the embedder returned {vecs.shape} for {len(texts)} texts")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, vecs, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:  # the cache is an optimisation: run on without it
        log.warning(
            "could not cache the catalog embeddings",
            extra={"fields": {"path": str(path), "error": str(exc)}},
        )
    return vecs, False


class SharedEmbedder:
    """An embedder that answers the catalog's texts from one precomputed matrix.

    Every brain of the run embeds the same catalog; this makes that a lookup.
    Other texts go to the wrapped model (and are remembered, up to a bound).
    """

    def __init__(self, inner: Embedder, texts: Sequence[str], vectors: F32) -> None:
        if vectors.shape != (len(texts), inner.dim):
            raise ValueError(f"{vectors.shape} vectors for {len(texts)} texts")
        self._inner = inner
        self._vectors = vectors
        self._row = {t: i for i, t in enumerate(texts)}
        self._extra: dict[str, F32] = {}
        self.hits = 0
        self.misses = 0
        self.model_id = getattr(inner, "model_id", None)

    @property
    def dim(self) -> int:
        return self._inner.dim

    def embed(self, texts: Sequence[str]) -> F32:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: list[int] = []
        for i, text in enumerate(texts):
            row = self._row.get(text)
            if row is not None:
                out[i] = self._vectors[row]
            elif text in self._extra:
                out[i] = self._extra[text]
            else:
                todo.append(i)
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = np.asarray(self._inner.embed([texts[i] for i in todo]), dtype=np.float32)
            for j, i in enumerate(todo):
                out[i] = fresh[j]
                if len(self._extra) < 10_000:
                    self._extra[texts[i]] = fresh[j]
        return out


# -- the brain ----------------------------------------------------------------------------


def local_brain_factory(
    config: Any = None,
    *,
    popularity: Mapping[int, float] | None = None,
    neighbours: Mapping[int, Sequence[tuple[int, float]]] | None = None,
) -> BrainFactory:
    """A factory of ``omega.Brain``s, one per user, with durability off (a simulation).

    ``popularity`` (item id → count) is given to the catalog as
    ``metadata["popularity"]``, ``neighbours`` (item id → [(item id, score)]) to
    ``apply_crowd``: crowd knowledge, for the ``[crowd]`` rows only.
    Raises :class:`QualityError` if the brain package is not importable.
    """
    try:
        from omega.brain import api
        from omega.brain.settings import BrainSettings
    except ImportError as exc:
        raise QualityError(f"the local brain is not available ({exc}); use --brain none") from exc
    settings = config if config is not None else BrainSettings(durability="nosync")
    return _LocalBrainFactory(api, settings, popularity, neighbours)


class _LocalBrainFactory:
    """Opens a real ``omega.Brain`` in a folder. Persistent: its catalog is in LMDB."""

    persistent = True

    def __init__(
        self,
        api: Any,
        settings: Any,
        popularity: Mapping[int, float] | None,
        neighbours: Mapping[int, Sequence[tuple[int, float]]] | None,
    ) -> None:
        self._api = api
        self._settings = settings
        self._popularity = popularity
        self._neighbours = neighbours

    def __call__(self, data_dir: Path, embedder: Embedder) -> BrainSession:
        brain = self._api.Brain.open(data_dir, self._settings, embedder=embedder)
        return _BrainAdapter(self._api, brain, self._popularity, self._neighbours)


class _BrainAdapter:
    """``omega.Brain`` as a :class:`BrainSession`: MovieLens ids as content-id strings."""

    def __init__(
        self,
        api: Any,
        brain: Any,
        popularity: Mapping[int, float] | None = None,
        neighbours: Mapping[int, Sequence[tuple[int, float]]] | None = None,
    ) -> None:
        self._api = api
        self._brain = brain
        self._popularity = popularity
        self._neighbours = neighbours

    def add_content(self, items: Sequence[Item]) -> None:
        content = self._api.Content
        pop = self._popularity
        batch = [
            content(
                id=str(i.id),
                title=i.title,
                genres=i.genres,
                year=i.year,
                metadata={"popularity": float(pop.get(i.id, 0.0))} if pop is not None else {},
            )
            for i in items
        ]
        self._brain.add_content(batch, progress=False)
        if self._neighbours is not None:
            lists = {
                str(item): [(str(other), float(score)) for other, score in lst]
                for item, lst in self._neighbours.items()
            }
            self._brain.apply_crowd(lists, {}, [], 1)

    def observe(self, item_id: int, watch_fraction: float, timestamp: float) -> None:
        self._brain.observe(self._api.ViewingEvent(str(item_id), watch_fraction, timestamp))

    def recommend(self, k: int, timestamp: float) -> Sequence[int]:
        return [int(r.content_id) for r in self._brain.recommend(k, timestamp)]

    def close(self) -> None:
        self._brain.close()


@dataclass
class BrainRun:
    """Lists the brain returned, per evaluated user, and what it cost."""

    test: list[list[int]] = field(default_factory=list)
    cold: list[list[int]] = field(default_factory=list)
    held_out: list[list[int]] = field(default_factory=list)
    """One list per held-out case, users in order, each user's cases as
    :func:`held_out_positions` gives them."""
    held_out_seconds: float = 0.0
    """Time spent in the held-out ``recommend`` calls (part of the replay)."""
    seconds: list[float] = field(default_factory=list)
    foreign: int = 0
    """Returned ids that are not in the catalog (dropped)."""
    watched: int = 0
    """Returned items already in the replayed history (dropped)."""


def replay_brain(
    factory: BrainFactory,
    users: Sequence[UserHistory],
    items: Sequence[Item],
    embedder: Embedder,
    *,
    k: int,
    cold_start: bool,
    work_dir: Path | None = None,
    progress: bool = False,
    label: str = "brain",
    held_out: int = 0,
) -> BrainRun:
    """Replay each user's views through a fresh brain; collect its lists.

    One replay per user serves every slice: the cold-start list is asked after
    the first 5 views, the test list after the training history, and with
    ``held_out`` > 0 the :func:`held_out_positions` lists after their histories
    (all prefixes of the same time-ordered views). The validation item is never
    replayed: the test item is two steps ahead.

    A persistent factory gets the catalog once, in a template brain; each user's
    brain opens a copy of its folder (~3× faster than storing 9,724 titles per user).
    """
    from tqdm import tqdm

    index = {item.id: pos for pos, item in enumerate(items)}
    run = BrainRun()
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        template: Path | None = None
        if getattr(factory, "persistent", False):
            root = Path(tempfile.mkdtemp(prefix="omega-quality-catalog-", dir=work_dir))
            stack.callback(shutil.rmtree, root, True)
            template = root / "brain"
            _build_template(factory, template, items, embedder)
        bar = tqdm(users, desc=label, unit="user", disable=not progress, file=sys.stderr)
        for user in bar:
            started = time.perf_counter()
            # views seen -> (slice, position of the target in the user's views)
            last = len(user.items) - 1
            asks: dict[int, list[tuple[str, int]]] = {len(user.train): [("test", last)]}
            if cold_start and user.has_cold:
                asks.setdefault(COLD_HISTORY, []).append(("cold", COLD_HISTORY))
            cases = held_out_positions(len(user.items), held_out)
            for j, (seen, target) in enumerate(cases):
                asks.setdefault(seen, []).append((f"{_HELD_OUT_SLICE} {j}", target))
            lists = _replay_one(
                factory, user, items, index, embedder, k, work_dir, run, asks, template
            )
            run.test.append(lists["test"])
            if cold_start and user.has_cold:
                run.cold.append(lists["cold"])
            run.held_out.extend(lists[f"{_HELD_OUT_SLICE} {j}"] for j in range(len(cases)))
            run.seconds.append(time.perf_counter() - started)
    return run


def _build_template(
    factory: BrainFactory, folder: Path, items: Sequence[Item], embedder: Embedder
) -> None:
    try:
        brain = factory(folder, embedder)
        try:
            brain.add_content(items)
        finally:
            brain.close()
    except OmegaError as exc:
        raise QualityError(f"the brain failed to store the catalog: {exc}") from exc


def _replay_one(
    factory: BrainFactory,
    user: UserHistory,
    items: Sequence[Item],
    index: dict[int, int],
    embedder: Embedder,
    k: int,
    work_dir: Path | None,
    run: BrainRun,
    asks: dict[int, list[tuple[str, int]]],
    template: Path | None = None,
) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    last = max(asks)
    folder = Path(tempfile.mkdtemp(prefix=f"omega-quality-u{user.user_id}-", dir=work_dir))
    try:
        if template is not None:
            shutil.copytree(template, folder / "brain")
        brain = factory(folder / "brain", embedder)
        try:
            if template is None:
                brain.add_content(items)
            for seen in range(last + 1):
                for slice_name, target in asks.get(seen, []):
                    # Asked at the time of the view to predict (only its time is known).
                    asked = time.perf_counter()
                    raw = brain.recommend(k, float(user.timestamps[target]))
                    if slice_name.startswith(_HELD_OUT_SLICE):
                        run.held_out_seconds += time.perf_counter() - asked
                    out[slice_name] = _clean(raw, index, set(user.items[:seen].tolist()), k, run)
                if seen < last:
                    brain.observe(
                        items[int(user.items[seen])].id,
                        float(user.fractions[seen]),
                        float(user.timestamps[seen]),
                    )
        finally:
            brain.close()
    except OmegaError as exc:
        raise QualityError(f"the brain failed on user {user.user_id}: {exc}") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def _clean(
    raw: Iterable[int], index: dict[int, int], history: set[int], k: int, run: BrainRun
) -> list[int]:
    """Catalog positions of a returned list: unknown ids and watched items dropped, counted."""
    out: list[int] = []
    for item_id in raw:
        pos = index.get(int(item_id))
        if pos is None:
            run.foreign += 1
        elif pos in history:
            run.watched += 1
        elif pos not in out:
            out.append(pos)
    return out[:k]


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceResult:
    """One method on one slice: means with standard errors, and the per-user values."""

    users: int
    hr: float
    hr_se: float
    ndcg: float
    ndcg_se: float
    coverage: float
    hits: FloatArray = field(repr=False, compare=False)
    ndcgs: FloatArray = field(repr=False, compare=False)

    @classmethod
    def of(cls, lists: IntArray, targets: Sequence[int], n_items: int) -> SliceResult:
        hits, ndcgs = hit_ndcg(lists, targets)
        hr, hr_se = mean_se(hits)
        nd, nd_se = mean_se(ndcgs)
        return cls(len(targets), hr, hr_se, nd, nd_se, coverage(lists, n_items), hits, ndcgs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "hr": _num(self.hr),
            "hr_se": _num(self.hr_se),
            "ndcg": _num(self.ndcg),
            "ndcg_se": _num(self.ndcg_se),
            "coverage": _num(self.coverage),
        }


@dataclass(frozen=True)
class MethodResult:
    name: str
    params: dict[str, float | int]
    test: SliceResult
    cold: SliceResult | None
    val_hr: float | None
    val_ndcg: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "test": self.test.to_dict(),
            "cold": self.cold.to_dict() if self.cold else None,
            "val": None
            if self.val_ndcg is None
            else {"hr": _num(self.val_hr), "ndcg": _num(self.val_ndcg)},
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Comparison:
    """``reference − other`` on one slice and metric, paired by user."""

    reference: str
    other: str
    slice: str
    metric: str
    diff: PairedDiff

    def to_dict(self) -> dict[str, Any]:
        d = self.diff
        return {
            "reference": self.reference,
            "other": self.other,
            "slice": self.slice,
            "metric": self.metric,
            "diff": _num(d.diff),
            "se": _num(d.se),
            "ci95": [_num(d.low), _num(d.high)],
            "users": d.n,
        }


@dataclass(frozen=True)
class HeldOutResult:
    """The brain and the content baseline on the held-out positions (no tuning target).

    Both are scored on the same cases: per evaluated user, the targets
    ``items[-5] .. items[-4 - positions]`` predicted two steps ahead
    (:func:`held_out_positions`). ``hr`` and ``ndcg`` are brain − content, paired
    and clustered by user (:func:`omega.sim.metrics.clustered_paired_diff`).
    """

    positions: int
    users: int
    """Users with at least one case."""
    brain: SliceResult
    content: SliceResult
    content_params: dict[str, float | int]
    hr: PairedDiff
    ndcg: PairedDiff
    brain_seconds: float
    """Time of the brain's held-out ``recommend`` calls, inside its one replay."""
    content_seconds: float

    @property
    def cases(self) -> int:
        return self.brain.users

    def to_dict(self) -> dict[str, Any]:
        def method(r: SliceResult) -> dict[str, Any]:
            return {"hr": _num(r.hr), "ndcg": _num(r.ndcg), "coverage": _num(r.coverage)}

        def diff(d: PairedDiff) -> dict[str, Any]:
            return {
                "diff": _num(d.diff),
                "se": _num(d.se),
                "ci95": [_num(d.low), _num(d.high)],
                "excludes_0": d.significant,
                "users": d.n,
            }

        return {
            "positions": self.positions,
            "targets": f"items[-{HELD_OUT_FIRST}] .. items[-{HELD_OUT_FIRST + self.positions - 1}]",
            "history": "items[:-back - 1] (two steps ahead), at least "
            f"{HELD_OUT_MIN_HISTORY} views",
            "cases": self.cases,
            "users": self.users,
            "brain": method(self.brain),
            HELD_OUT_BASELINE: {**method(self.content), "params": self.content_params},
            "brain_minus_content": {"HR": diff(self.hr), "NDCG": diff(self.ndcg)},
            "ci": "95 %, paired, clustered by user (each user's cases averaged first)",
            "not_scored": "most popular, item-kNN, EASE, content + popularity: fitted on "
            "training data that contains these targets",
            "seconds": {
                "brain_recommend": round(self.brain_seconds, 3),
                "content": round(self.content_seconds, 3),
            },
        }


@dataclass(frozen=True)
class QualityReport:
    data_dir: str
    layout: str
    n_users: int
    n_items: int
    n_interactions: int
    evaluated_users: int
    cold_users: int
    k: int
    embedder: str
    embeddings_cached: bool
    methods: tuple[MethodResult, ...]
    reference: str | None
    comparisons: tuple[Comparison, ...]
    timings: dict[str, float]
    brain: dict[str, Any] | None
    date: str
    held_out: HeldOutResult | None = None
    """None when off (``held_out_positions = 0``) or without a brain."""

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "quality",
            "date": self.date,
            "data": {
                "dir": self.data_dir,
                "layout": self.layout,
                "users": self.n_users,
                "items": self.n_items,
                "interactions": self.n_interactions,
                "evaluated_users": self.evaluated_users,
                "cold_users": self.cold_users,
            },
            "k": self.k,
            "embedder": self.embedder,
            "embeddings_cached": self.embeddings_cached,
            "methods": [m.to_dict() for m in self.methods],
            "reference": self.reference,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "timings": {key: round(v, 3) for key, v in self.timings.items()},
            "brain": self.brain,
            "held_out": self.held_out.to_dict() if self.held_out is not None else None,
        }


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 5)


def format_text(report: QualityReport) -> str:
    """The report as a table for a terminal."""
    k = report.k
    lines = [
        f"Quality benchmark (BENCHMARKS.md §1) on {report.data_dir} [{report.layout}], "
        f"{report.date}",
        f"  {report.n_users} users, {report.n_items} items, {report.n_interactions} "
        f"interactions; evaluated {report.evaluated_users} users "
        f"({report.cold_users} in the cold-start slice); embedder {report.embedder}"
        + (" (cached)" if report.embeddings_cached else ""),
        "",
        f"{'method':<30}{'HR@' + str(k):>16}{'NDCG@' + str(k):>16}{'cov':>7}"
        f"{'cold HR':>16}{'cold NDCG':>16}{'time':>8}  params",
    ]
    for m in report.methods:
        cold = m.cold
        lines.append(
            f"{m.name:<30}{_pm(m.test.hr, m.test.hr_se):>16}"
            f"{_pm(m.test.ndcg, m.test.ndcg_se):>16}{m.test.coverage:>7.3f}"
            f"{_pm(cold.hr, cold.hr_se) if cold else '-':>16}"
            f"{_pm(cold.ndcg, cold.ndcg_se) if cold else '-':>16}"
            f"{m.seconds:>7.1f}s  {_params(m.params)}"
        )
    names = {m.name for m in report.methods}
    if BRAIN in names:
        lines.append(f"  {BRAIN}: its own user's views and the catalog only, no crowd knowledge")
    if names & {CROWD_POPULARITY, CROWD_LISTS}:
        lines.append(
            "  [crowd]: the brain also given what federation would send, computed centrally "
            "from every training history (no privacy, no noise); no cold-start slice"
        )
    if report.comparisons:
        lines += ["", f"Paired differences, {report.reference} − baseline (95% CI, per user):"]
        by_other: dict[str, list[Comparison]] = {}
        for c in report.comparisons:
            by_other.setdefault(c.other, []).append(c)
        for other, comps in by_other.items():
            parts = [
                f"{c.slice} {c.metric} {c.diff.diff:+.3f} [{c.diff.low:+.3f}, {c.diff.high:+.3f}]"
                + ("*" if c.diff.significant else "")
                for c in comps
            ]
            lines.append(f"  vs {other:<28} " + "   ".join(parts))
        lines.append("  (* the interval excludes 0)")
    if report.held_out is not None:
        lines += ["", *_held_out_lines(report)]
    if report.brain:
        b = report.brain
        lines += [
            "",
            f"Brain: {b['users']} users replayed in {b['seconds']:.1f} s "
            f"({b['seconds_per_user_p50']:.2f} s/user p50, {b['seconds_per_user_p99']:.2f} p99); "
            f"dropped {b['foreign_ids']} unknown ids and {b['watched_items']} watched items; "
            f"embedder lookups {b['embed_hits']} shared, {b['embed_misses']} computed",
        ]
    lines += ["", "Time: " + ", ".join(f"{key} {v:.1f} s" for key, v in report.timings.items())]
    return "\n".join(lines)


def _held_out_lines(report: QualityReport) -> list[str]:
    h = report.held_out
    assert h is not None
    k = report.k
    last = HELD_OUT_FIRST + h.positions - 1
    lines = [
        f"Held-out positions: targets items[-{HELD_OUT_FIRST}..-{last}], each from the views "
        f"before the one preceding it (two steps ahead, >= {HELD_OUT_MIN_HISTORY} views); "
        "no test or tuning target",
    ]
    if h.cases == 0:
        lines.append(
            f"  no case: a user needs at least {HELD_OUT_FIRST + HELD_OUT_MIN_HISTORY + 1} views"
        )
        return lines
    lines += [
        f"  {h.cases} cases from {h.users} users",
        f"  {BRAIN:<30}HR@{k} {h.brain.hr:.3f}   NDCG@{k} {h.brain.ndcg:.3f}",
        f"  {HELD_OUT_BASELINE:<30}HR@{k} {h.content.hr:.3f}   NDCG@{k} {h.content.ndcg:.3f}"
        f"   ({_params(h.content_params)}, as tuned on validation)",
        f"  {BRAIN} − {HELD_OUT_BASELINE}, 95% CI clustered by user: "
        f"HR {_ci(h.hr)}   NDCG {_ci(h.ndcg)}",
    ]
    test = {
        c.metric: c.diff
        for c in report.comparisons
        if c.reference == BRAIN and c.other == HELD_OUT_BASELINE and c.slice == "test"
    }
    if test:
        lines.append(
            f"  test item, one case per user ({test['HR'].n} users), paired 95% CI: "
            f"HR {_ci(test['HR'])}   NDCG {_ci(test['NDCG'])}"
        )
    lines += [
        "  (* the interval excludes 0; most popular, item-kNN, EASE and content + popularity "
        "are not scored here: they are fitted on training data that contains these targets)",
        f"  held-out time: brain recommend {h.brain_seconds:.1f} s (inside its replay), "
        f"content {h.content_seconds:.1f} s",
    ]
    return lines


def _ci(d: PairedDiff) -> str:
    return f"{d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + ("*" if d.significant else "")


def _pm(mean: float, se: float) -> str:
    return f"{mean:.3f} ±{se:.3f}" if math.isfinite(se) else f"{mean:.3f}"


def _params(params: dict[str, float | int]) -> str:
    return " ".join(f"{key}={v:g}" for key, v in params.items())


# -- the run --------------------------------------------------------------------------------


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
    from tqdm import tqdm

    s = settings or QualitySettings()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_movielens(data_dir)
    split = split_leave_last(data)
    if not split.users:
        raise DatasetError(data.path, "no user has at least 5 interactions")
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    texts = data.texts()
    vectors, cached = catalog_embeddings(
        texts, embedder, cache_dir or default_cache_dir(), progress=progress
    )
    timings["embed catalog"] = time.perf_counter() - t

    rows = _evaluated_rows(len(split.users), s.max_users)
    users = [split.users[r] for r in rows]
    cold_pos = [i for i, u in enumerate(users) if u.has_cold] if cold_start else []
    test_targets = [u.test_item for u in users]
    cold_targets = [users[i].cold_item for i in cold_pos]
    n = data.n_items

    methods: list[MethodResult] = []
    train = TrainData(split.train_matrix(), vectors)
    baselines = default_baselines(
        decay=s.recency_decay,
        ease_lambdas=s.ease_lambdas,
        knn_neighbours=s.knn_neighbours,
        content_last_n=s.content_last_n,
        content_popularity=s.content_popularity,
    )
    scorers: dict[str, Scorer] = {}
    bar = tqdm(baselines, desc="baselines", unit="method", disable=not progress, file=sys.stderr)
    for baseline in bar:
        bar.set_postfix_str(baseline.name)
        result, scorers[baseline.name] = _run_baseline(
            baseline, split, train, rows, users, cold_pos, test_targets, cold_targets, s
        )
        methods.append(result)
        log.info(
            "baseline done",
            extra={"fields": {"method": baseline.name, "seconds": round(methods[-1].seconds, 2)}},
        )
    timings["baselines"] = sum(m.seconds for m in methods)

    brain_info: dict[str, Any] | None = None
    held_out: HeldOutResult | None = None
    if brain_factory is not None:
        t = time.perf_counter()
        shared = SharedEmbedder(embedder, texts, vectors)
        run = replay_brain(
            brain_factory,
            users,
            data.items,
            shared,
            k=s.k,
            cold_start=cold_start,
            work_dir=work_dir,
            progress=progress,
            held_out=s.held_out_positions,
        )
        seconds = time.perf_counter() - t
        timings["brain"] = seconds
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
        cold_lists = pad_lists(run.cold, s.k) if cold_pos else None
        crowd_rows: list[MethodResult] = []
        if crowd_variants:
            for name, factory in _crowd_factories(data.items, train):
                t = time.perf_counter()
                crowd_run = replay_brain(
                    factory,
                    users,
                    data.items,
                    shared,
                    k=s.k,
                    cold_start=False,
                    work_dir=work_dir,
                    progress=progress,
                    label=name,
                )
                took = time.perf_counter() - t
                timings[name] = took
                test = SliceResult.of(pad_lists(crowd_run.test, s.k), test_targets, n)
                crowd_rows.append(MethodResult(name, {}, test, None, None, None, took))
        methods[0:0] = [
            MethodResult(
                BRAIN,
                {},
                SliceResult.of(pad_lists(run.test, s.k), test_targets, n),
                SliceResult.of(cold_lists, cold_targets, n) if cold_lists is not None else None,
                None,
                None,
                seconds,
            ),
            *crowd_rows,
        ]
        per_user = np.asarray(run.seconds)
        brain_info = {
            "users": len(users),
            "seconds": round(seconds, 3),
            "seconds_per_user_p50": round(float(np.median(per_user)), 4),
            "seconds_per_user_p99": round(float(np.quantile(per_user, 0.99)), 4),
            "foreign_ids": run.foreign,
            "watched_items": run.watched,
            "embed_hits": shared.hits,
            "embed_misses": shared.misses,
        }
    timings["total"] = time.perf_counter() - t0

    reference = BRAIN if brain_factory is not None else FALLBACK_REFERENCE
    return QualityReport(
        data_dir=str(data.path),
        layout=data.layout,
        n_users=len(split.users),
        n_items=n,
        n_interactions=data.n_interactions,
        evaluated_users=len(users),
        cold_users=len(cold_pos),
        k=s.k,
        embedder=embedder_key(embedder),
        embeddings_cached=cached,
        methods=tuple(methods),
        reference=reference,
        comparisons=tuple(_compare(methods, reference)),
        timings=timings,
        brain=brain_info,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        held_out=held_out,
    )


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
    baseline: Baseline,
    split: Split,
    train: TrainData,
    rows: list[int],
    users: list[UserHistory],
    cold_pos: list[int],
    test_targets: list[int],
    cold_targets: list[int],
    s: QualitySettings,
) -> tuple[MethodResult, Scorer]:
    """The baseline's results and its scorer, as tuned on validation."""
    t = time.perf_counter()
    # Tuned on every user's validation item, whatever subset is evaluated.
    tuned = tune(
        baseline,
        train,
        [u.train for u in split.users],
        [u.val_item for u in split.users],
        s.k,
    )
    test = SliceResult.of(
        rank(tuned.scorer, [u.train for u in users], s.k), test_targets, train.n_items
    )
    cold = None
    if cold_pos:
        lists = cold_start_lists(
            baseline,
            tuned.params,
            train.x,
            train.embeddings,
            [rows[i] for i in cold_pos],
            [users[i].cold_history for i in cold_pos],
            s.k,
            s.cold_folds,
        )
        cold = SliceResult.of(lists, cold_targets, train.n_items)
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
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder")
    parser.add_argument("--work-dir", type=Path, default=None, help="where brains are created")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Run from parsed options; prints the report, returns the exit code (2: bad input)."""
    try:
        settings = QualitySettings(
            max_users=args.max_users, held_out_positions=args.held_out_positions
        )
        cache_dir = args.cache_dir or default_cache_dir()
        embedder = _make_embedder(args.embedder, cache_dir)
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
