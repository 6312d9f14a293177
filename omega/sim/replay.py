"""Replaying MovieLens users through a brain, one fresh brain per user.

The brain is reached only through ``brain_factory(data_dir, embedder) ->
BrainSession``, so the benchmark does not depend on the brain's internals;
:func:`local_brain_factory` adapts ``omega.Brain``. The catalog is embedded
once (cached on disk by a hash of the texts and the model) and every brain gets
a :class:`SharedEmbedder` that answers catalog texts from that matrix. A
persistent factory (the real brain) stores the catalog once, in a template
folder that each user's brain starts from as a copy. One replay per user asks
for every slice's list (test, cold start, held-out positions).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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
from omega.sim.movielens import (
    COLD_HISTORY,
    History,
    Item,
    UserHistory,
)

__all__ = [
    "HELD_OUT_FIRST",
    "HELD_OUT_MIN_HISTORY",
    "BrainFactory",
    "BrainRun",
    "BrainSession",
    "Embedder",
    "QualityError",
    "SharedEmbedder",
    "catalog_embeddings",
    "held_out_positions",
    "local_brain_factory",
    "replay_brain",
]

log = logging.getLogger("omega.sim")

F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

_PROBE = "Heat (1995). Genres: Action, Crime, Thriller"
#: The nearest held-out target is ``items[-HELD_OUT_FIRST]``: items[-1] is the test
#: item, items[-2..-4] are targets the brain was tuned on.
HELD_OUT_FIRST = 5
#: A held-out case needs a history of at least this many views.
HELD_OUT_MIN_HISTORY = 5
_HELD_OUT_SLICE = "held-out"


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
    crowd_popularity: Mapping[int, float] | None = None,
) -> BrainFactory:
    """A factory of ``omega.Brain``s, one per user, with durability off (a simulation).

    ``popularity`` (item id → count) is given to the catalog as
    ``metadata["popularity"]``, ``neighbours`` (item id → [(item id, score)]) to
    ``apply_crowd``: crowd knowledge, for the ``[crowd]`` rows only;
    ``crowd_popularity`` (item id → count) also through ``apply_crowd``, as a
    release delivers it (the federated rows).
    Raises :class:`QualityError` if the brain package is not importable.
    """
    try:
        from omega.brain import api
        from omega.brain.settings import BrainSettings
    except ImportError as exc:
        raise QualityError(f"the local brain is not available ({exc}); use --brain none") from exc
    settings = config if config is not None else BrainSettings(durability="nosync")
    return _LocalBrainFactory(api, settings, popularity, neighbours, crowd_popularity)


class _LocalBrainFactory:
    """Opens a real ``omega.Brain`` in a folder. Persistent: its catalog is in LMDB."""

    persistent = True

    def __init__(
        self,
        api: Any,
        settings: Any,
        popularity: Mapping[int, float] | None,
        neighbours: Mapping[int, Sequence[tuple[int, float]]] | None,
        crowd_popularity: Mapping[int, float] | None = None,
    ) -> None:
        self._api = api
        self._settings = settings
        self._popularity = popularity
        self._neighbours = neighbours
        self._crowd_popularity = crowd_popularity

    def __call__(self, data_dir: Path, embedder: Embedder) -> BrainSession:
        brain = self._api.Brain.open(data_dir, self._settings, embedder=embedder)
        return _BrainAdapter(self._api, brain, self._popularity, self._neighbours,
                             self._crowd_popularity)


class _BrainAdapter:
    """``omega.Brain`` as a :class:`BrainSession`: MovieLens ids as content-id strings."""

    def __init__(
        self,
        api: Any,
        brain: Any,
        popularity: Mapping[int, float] | None = None,
        neighbours: Mapping[int, Sequence[tuple[int, float]]] | None = None,
        crowd_popularity: Mapping[int, float] | None = None,
    ) -> None:
        self._api = api
        self._brain = brain
        self._popularity = popularity
        self._neighbours = neighbours
        self._crowd_popularity = crowd_popularity

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
        if self._neighbours is not None or self._crowd_popularity is not None:
            lists = {
                str(item): [(str(other), float(score)) for other, score in lst]
                for item, lst in (self._neighbours or {}).items()
            }
            crowd_pop = {str(i): float(v) for i, v in (self._crowd_popularity or {}).items()}
            self._brain.apply_crowd(lists, crowd_pop, [], 1)

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
    val: list[list[int]] = field(default_factory=list)
    """With ``extra``: the validation item's lists (training history)."""
    test_other: list[list[int]] = field(default_factory=list)
    """With ``extra``: the test item's lists from the other history."""
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
    history: History = "train",
    extra: bool = False,
) -> BrainRun:
    """Replay each user's views through a fresh brain; collect its lists.

    One replay per user serves every slice: the cold-start list is asked after
    the first 5 views, the test list after the training history, and with
    ``held_out`` > 0 the :func:`held_out_positions` lists after their histories
    (all prefixes of the same time-ordered views). With ``history="train"`` the
    validation item is not replayed before the test list (two steps ahead, A);
    with ``"all"`` it is (B, what a TV knows). With ``extra`` the same replay also
    asks for the validation item after the training history (``run.val``) and for
    the test item from the other history (``run.test_other``).

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
            asks: dict[int, list[tuple[str, int]]] = {
                len(user.test_history(history)): [("test", last)]
            }
            if cold_start and user.has_cold:
                asks.setdefault(COLD_HISTORY, []).append(("cold", COLD_HISTORY))
            if extra:
                other: History = "train" if history == "all" else "all"
                asks.setdefault(len(user.test_history(other)), []).append(("other", last))
                asks.setdefault(len(user.train), []).append(("val", last - 1))
            cases = held_out_positions(len(user.items), held_out)
            for j, (seen, target) in enumerate(cases):
                asks.setdefault(seen, []).append((f"{_HELD_OUT_SLICE} {j}", target))
            lists = _replay_one(
                factory, user, items, index, embedder, k, work_dir, run, asks, template
            )
            run.test.append(lists["test"])
            if extra:
                run.val.append(lists["val"])
                run.test_other.append(lists["other"])
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

