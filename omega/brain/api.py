"""The public API of the TV brain: ``Brain``, ``Content``, ``ViewingEvent``, ``Recommendation``.

    from omega import Brain, Content, ViewingEvent

    with Brain.open("var/tv") as brain:
        brain.add_content([Content(id="m1", title="Heat (1995)", genres=("Action", "Crime"))])
        brain.observe(ViewingEvent(content_id="m1", watch_fraction=0.95, timestamp=1_700_000_000))
        for rec in brain.recommend(k=10, timestamp=1_700_000_500):
            print(rec.content_id, rec.score, rec.reason)

One ``Brain`` per data directory (an exclusive lock guards it). Every write is
one LMDB transaction, committed before the call returns; bad input raises a
``omega.brain.errors.BadInput`` subclass and changes nothing. The catalog is
embedded once (``add_content``); ``observe`` and ``recommend`` embed nothing.
Calls are serialized by a lock, so one brain may be shared by threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain import recommender as rk
from omega.brain.catalog import Catalog, text_hash
from omega.brain.content import (
    Content,
    Recommendation,
    ViewingEvent,
    check_context,
    check_event,
    content_text,
)
from omega.brain.crowd import CrowdView, check_crowd_update, merge
from omega.brain.embedder import Embedder
from omega.brain.errors import (
    BadInput,
    BrainClosed,
    BrainError,
    DataDirError,
    DataDirLocked,
    InvalidContent,
    InvalidEvent,
    OutOfOrderEvent,
    UnknownContent,
)
from omega.brain.memory import CatalogRecord, Episode, Memory, PatternRecord, ViewWrite
from omega.brain.patterns import SkillLibrary, consolidate
from omega.brain.profile import (
    ALL_DAY,
    event_daypart,
    genre_affinity,
    update_profile,
    view_weight,
)
from omega.brain.settings import BrainSettings
from omega.index import VectorIndex, create_index

__all__ = ["Brain", "CatalogUpdate", "Content", "Embedder", "Recommendation", "ViewingEvent"]

log = logging.getLogger("omega.brain")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
PROBE_TEXT = "omega embedder probe: Heat (1995). Genres: Action, Crime, Thriller."
#: Views between two ``Memory.remap`` calls (~2 ms each).
REMAP_EVERY = 250
#: Writes this large are followed by ``_release_memory``.
BULK_ITEMS = 1000
#: The last second of year 9999, datetime's limit: a clock beyond it has no year.
_MAX_DATETIME_TS = 253_402_300_799


@dataclass(frozen=True)
class CatalogUpdate:
    """What ``add_content`` did: new titles, changed titles, identical re-sends."""

    added: int
    updated: int
    unchanged: int


def _normalized(v: F32) -> F32:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v


def _default_embedder(settings: BrainSettings, cache_dir: Path) -> Embedder:
    from omega.brain.embedder import OnnxEmbedder

    emb: Embedder = OnnxEmbedder.from_settings(settings.embedder, cache_dir)
    return emb


def _sync_key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise BadInput("a sync key is a string of 1-200 characters")
    return key


def _malloc_trim() -> None:
    # Loading 10,000 titles frees many small buffers that glibc keeps otherwise (~15 MB).
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _new_index(settings: BrainSettings, dim: int, capacity: int) -> VectorIndex:
    return create_index("hnsw", dim, capacity, settings.index)


def _load_index(path: Path, settings: BrainSettings) -> VectorIndex:
    from omega.index.hnsw import HnswIndex

    return HnswIndex.load(path, settings.index)


class Brain:
    """The TV's recommender with its durable memory. Open with ``Brain.open``."""

    def __init__(self, *, path: Path, settings: BrainSettings, embedder: Embedder,
                 memory: Memory, lock_fd: int, wall: Callable[[], float]) -> None:
        self._path = path
        self._settings = settings
        self._embedder = embedder
        self._mem: Memory | None = memory
        self._lock_fd = lock_fd
        self._wall = wall
        self._mutex = threading.RLock()
        self._catalog = Catalog(embedder.dim)
        self._catalog_index: VectorIndex | None = None
        self._library: SkillLibrary | None = None
        self._profile = np.zeros(embedder.dim, dtype=np.float32)
        self._profile_stats: dict[str, float] = {"views": 0.0, "successes": 0.0}
        self._recent: deque[tuple[int, float, float]] = deque(maxlen=settings.history_length)
        self._seen: dict[str, tuple[int, float, float, float]] = {}
        self._watched = np.zeros(0, dtype=bool)
        self._counts: dict[tuple[str, str], tuple[float, float]] = {}
        self._ctx_cache: dict[str, F32] = {}
        # Each compared title's cosine to the whole catalog (full scans), by position;
        # valid for one catalog generation (see _similarity_rows).
        self._sim_rows: dict[int, F32] = {}
        self._sim_rows_gen = -1
        self._years_gen = -1
        self._years = np.zeros(0, dtype=np.int64)
        self._crowd_state = memory.load_crowd()
        self._crowd = CrowdView(self._crowd_state, self._catalog)
        self._meta: dict[str, Any] = {}
        r = settings.recommender
        self._with_crowd = replace(r, popularity=r.popularity_with_crowd)

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        config: BrainSettings | None = None,
        *,
        embedder: Embedder | None = None,
        wall: Callable[[], float] = time.time,
    ) -> Brain:
        """Open (or create) the brain in ``data_dir``.

        ``embedder`` overrides the configured ONNX model (tests pass ``HashEmbedder``).
        Raises ``DataDirLocked`` if another brain has the directory open,
        ``CorruptDataDir`` / ``SchemaVersionMismatch`` if its files are not usable.
        """
        settings = config if config is not None else BrainSettings()
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / "brain.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(str(path), f"cannot use the data directory: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise DataDirLocked(str(path), "another brain has this data directory open") from exc
        memory: Memory | None = None
        try:
            memory = Memory.open(path / "memory", map_size=settings.map_size,
                                 durability=settings.durability)
            if embedder is None:
                embedder = _default_embedder(settings, settings.model_cache_dir or path / "cache")
            brain = cls(path=path, settings=settings, embedder=embedder, memory=memory,
                        lock_fd=fd, wall=wall)
            brain._load()
            return brain
        except BaseException:
            if memory is not None:
                memory.close()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise

    def _load(self) -> None:
        mem = self._memory
        started = time.monotonic()
        self._meta = mem.meta()
        dim = self._embedder.dim
        stored_dim = self._meta.get("dim")
        records, matrix = mem.load_catalog_arrays(dim)
        probe = self._embedder.embed([PROBE_TEXT])[0].astype(np.float32)
        stored_probe = self._meta.get("embedder_probe")
        same_model = (
            stored_dim == dim and isinstance(stored_probe, bytes)
            and len(stored_probe) == 4 * dim
            and float(np.frombuffer(stored_probe, dtype=np.float32) @ probe) > 0.999
        )
        if records and not same_model:
            log.warning("embedder changed: re-embedding the catalog",
                        extra={"fields": {"items": len(records), "dim": dim}})
            del matrix
            self._reembed(records, probe)
        else:
            self._catalog.load(records, matrix)
            if not records:
                mem.put_meta({"dim": dim, "embedder_probe": probe.tobytes()})
                self._meta.update({"dim": dim, "embedder_probe": probe.tobytes()})
        vec, stats = mem.load_profile()
        if vec is not None and vec.size == dim:
            self._profile = vec
        self._profile_stats.update(stats)
        self._seen = mem.load_seen()
        self._counts = mem.load_counts()
        for ep in reversed(mem.recent_episodes(self._settings.history_length)):
            pos = self._catalog.position.get(ep.content_id)
            if pos is not None:
                self._recent.appendleft((pos, ep.watch_fraction, ep.timestamp))
        self._refresh_watched()
        self._crowd = CrowdView(self._crowd_state, self._catalog)
        self._open_indexes()
        self._release_memory()
        log.info("brain open", extra={"fields": {
            "path": str(self._path), "catalog": len(self._catalog),
            "patterns": len(self._lib), "episodes": self._meta.get("next_episode", 1) - 1,
            "seconds": round(time.monotonic() - started, 3)}})

    def _release_memory(self) -> None:
        """After a bulk read or write: unmap LMDB pages, hand freed heap back to the OS."""
        self._memory.remap()
        _malloc_trim()

    def _reembed(self, records: list[CatalogRecord], probe: F32) -> None:
        """The model changed: new vectors for the catalog, the profile and no old patterns."""
        texts = [content_text(self._as_content(rec)) for rec in records]
        vecs = self._embed(texts)
        fresh = [(rec, vecs[i]) for i, rec in enumerate(records)]
        gen = int(self._meta.get("catalog_gen", 0)) + 1
        meta = {"dim": self._embedder.dim, "embedder_probe": probe.tobytes(), "catalog_gen": gen}
        self._memory.write_catalog(fresh, meta)
        self._meta.update(meta)
        self._catalog.upsert(fresh)
        # Profile and pattern keys lived in the old space: rebuild the profile from
        # the episode log, drop the patterns (they regrow with the next views).
        s = self._settings
        profile = np.zeros(self._embedder.dim, dtype=np.float32)
        for ep in self._memory.iter_episodes():
            pos = self._catalog.position.get(ep.content_id)
            if pos is not None:
                w = view_weight(ep.watch_fraction, s.success_threshold, s.abandoned_weight)
                profile = update_profile(profile, self._catalog.embeddings[pos], w, s.content_decay)
        self._memory.reset_profile(profile)

    @staticmethod
    def _as_content(rec: CatalogRecord) -> Content:
        return Content(id=rec.content_id, title=rec.title, genres=rec.genres,
                       description=rec.description, year=rec.year,
                       duration_min=rec.duration_min, metadata=dict(rec.metadata))

    def _stamps(self) -> dict[str, dict[str, int]]:
        """What each saved index must match to be reused (else it is rebuilt)."""
        m = self._meta
        return {
            "catalog": {"dim": self._embedder.dim, "catalog_gen": int(m.get("catalog_gen", 0)),
                        "items": len(self._catalog)},
            "patterns": {"dim": self._embedder.dim, "next_episode": int(m.get("next_episode", 1)),
                         "next_pattern": int(m.get("next_pattern", 1)),
                         "catalog_gen": int(m.get("catalog_gen", 0))},
        }

    def _open_indexes(self) -> None:
        """Load the indexes saved at the last clean close, or rebuild them from LMDB.

        The saved files are a cache: a stamp written after them names the LMDB
        state they match, and it is deleted at open (the files fall behind at
        the first write). After a crash the pattern index is rebuilt (~1 s for
        10,000 patterns); the catalog index is built on first need.
        """
        s = self._settings
        folder = self._path / "index"
        stamp_file = folder / "stamp.json"
        saved: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(stamp_file.read_text())
        with contextlib.suppress(OSError):
            stamp_file.unlink()
        stamps = self._stamps()
        if isinstance(saved, dict) and saved.get("catalog") == stamps["catalog"]:
            self._catalog_index = self._try_load(folder / "catalog.index")
        pat_index = None
        if isinstance(saved, dict) and saved.get("patterns") == stamps["patterns"]:
            pat_index = self._try_load(folder / "patterns.index")
        next_pid = int(self._meta.get("next_pattern", 1))
        stats = {r.pid: r for r in self._memory.load_patterns(keys=False)}
        if pat_index is not None and set(pat_index.ids().tolist()) == set(stats):
            lib = SkillLibrary(pat_index, s.pattern_merge_threshold, next_pid)
            lib.entries = stats
        else:
            del stats
            lib = SkillLibrary(_new_index(s, self._embedder.dim, s.pattern_capacity),
                               s.pattern_merge_threshold, next_pid)
            lib.load(self._memory.load_patterns())  # streamed, in batches
        self._library = lib

    def _catalog_ann(self) -> VectorIndex:
        """The catalog's HNSW index, built on first need."""
        if self._catalog_index is None:
            s = self._settings
            index = _new_index(s, self._embedder.dim, s.max_catalog_items)
            n = len(self._catalog)
            if n:
                index.add(np.arange(n, dtype=np.int64), self._catalog.embeddings)
            self._catalog_index = index
        return self._catalog_index

    def _try_load(self, path: Path) -> VectorIndex | None:
        if not path.exists():
            return None
        try:
            return _load_index(path, self._settings)
        except Exception as exc:  # a derived cache: any failure means "rebuild"
            log.warning("saved index unusable, rebuilding",
                        extra={"fields": {"path": str(path), "error": repr(exc)}})
            return None

    def _save_indexes(self) -> None:
        folder = self._path / "index"
        try:
            folder.mkdir(exist_ok=True)
            stamps = self._stamps()
            if self._catalog_index is not None:
                self._catalog_index.save(folder / "catalog.index")  # atomic (tmp + rename)
            else:
                del stamps["catalog"]
            self._lib.index.save(folder / "patterns.index")
            tmp = folder / "stamp.json.tmp"
            tmp.write_text(json.dumps(stamps))
            os.replace(tmp, folder / "stamp.json")
        except Exception as exc:  # the indexes are rebuilt at the next open
            log.warning("could not save the indexes",
                        extra={"fields": {"path": str(folder), "error": repr(exc)}})

    def close(self) -> None:
        """Save the indexes (a cache: LMDB is the truth) and release the directory."""
        with self._mutex:
            if self._mem is None:
                return
            if self._library is not None:
                self._save_indexes()
            self._mem.close()
            self._mem = None
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    def __enter__(self) -> Brain:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def _memory(self) -> Memory:
        if self._mem is None:
            raise BrainClosed("the brain is closed")
        return self._mem

    @property
    def _lib(self) -> SkillLibrary:
        assert self._library is not None
        return self._library

    @property
    def settings(self) -> BrainSettings:
        return self._settings

    @property
    def embedder(self) -> Embedder:
        """The embedder this brain embeds its catalog with."""
        return self._embedder

    def vectors(self, content_ids: Sequence[str]) -> F32:
        """The stored embeddings of catalog titles, ``(n, dim)`` float32 (a copy)."""
        with self._mutex:
            self._memory  # noqa: B018 — raises BrainClosed
            pos = []
            for cid in content_ids:
                p = self._catalog.position.get(cid)
                if p is None:
                    raise UnknownContent(cid)
                pos.append(p)
            out: F32 = self._catalog.embeddings[np.asarray(pos, dtype=np.int64)].copy()
            return out

    def content_ids(self) -> list[str]:
        """Every catalog id, in the order titles were first added."""
        with self._mutex:
            return list(self._catalog.ids)

    # -- catalog -------------------------------------------------------------------------

    def add_content(self, items: Iterable[Content], *, progress: bool | None = None
                    ) -> CatalogUpdate:
        """Add or update catalog items; new or changed text is embedded here, once.

        A repeated id updates the item (the last one in ``items`` wins). All items
        are validated and embedded before anything is written, then stored in one
        transaction. ``progress``: show a progress bar (default: large catalogs).
        """
        with self._mutex:
            mem = self._memory
            batch: dict[str, Content] = {}
            for item in items:
                if not isinstance(item, Content):
                    raise InvalidContent("?", "item",
                                         f"expected Content, got {type(item).__name__}")
                batch[item.id] = item
            cat = self._catalog
            n_new = sum(1 for cid in batch if cid not in cat)
            if len(cat) + n_new > self._settings.max_catalog_items:
                raise InvalidContent("?", "catalog", f"more than max_catalog_items="
                                     f"{self._settings.max_catalog_items} titles")
            plan: list[tuple[CatalogRecord, Content, str]] = []
            unchanged = 0
            next_idx = len(cat)
            for cid, item in batch.items():
                text = content_text(item)
                rec = CatalogRecord(
                    idx=cat.position.get(cid, -1), content_id=cid, title=item.title,
                    genres=tuple(item.genres), description=item.description, year=item.year,
                    duration_min=item.duration_min, metadata=dict(item.metadata),
                    text_hash=text_hash(text))
                if rec.idx >= 0:
                    if cat.records[rec.idx] == rec:
                        unchanged += 1
                        continue
                else:
                    rec = CatalogRecord(**{**rec.__dict__, "idx": next_idx})
                    next_idx += 1
                plan.append((rec, item, text))
            if not plan:
                return CatalogUpdate(0, 0, unchanged)
            to_embed = [i for i, (rec, _, _) in enumerate(plan)
                        if rec.idx >= len(cat) or cat.records[rec.idx].text_hash != rec.text_hash]
            vecs = self._embed([plan[i][2] for i in to_embed], progress=progress)
            vec_of = {i: vecs[j] for j, i in enumerate(to_embed)}
            writes = [(rec, vec_of[i] if i in vec_of else cat.embeddings[rec.idx].copy())
                      for i, (rec, _, _) in enumerate(plan)]
            gen = int(self._meta.get("catalog_gen", 0)) + 1
            mem.write_catalog(writes, {"catalog_gen": gen, "next_idx": next_idx})
            self._meta.update({"catalog_gen": gen, "next_idx": next_idx})
            old_n = len(cat)
            cat.upsert(writes)
            fresh = np.asarray(sorted({writes[i][0].idx for i in to_embed}), dtype=np.int64)
            if fresh.size and self._catalog_index is not None:
                # ``add`` replaces the vector of a title already present.
                self._catalog_index.add(fresh, cat.embeddings[fresh])
            self._refresh_watched()
            self._crowd = CrowdView(self._crowd_state, cat)
            added = next_idx - old_n
            if len(plan) >= BULK_ITEMS:
                self._release_memory()
            log.info("catalog updated", extra={"fields": {
                "added": added, "updated": len(plan) - added, "embedded": len(to_embed)}})
            return CatalogUpdate(added, len(plan) - added, unchanged)

    def _embed(self, texts: Sequence[str], progress: bool | None = None) -> F32:
        dim = self._embedder.dim
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        show = progress if progress is not None else len(texts) >= self._settings.progress_min_items
        embed_catalog = getattr(self._embedder, "embed_catalog", None)
        if callable(embed_catalog):
            vecs = np.asarray(embed_catalog(list(texts), progress=show), dtype=np.float32)
        else:
            size = self._settings.embed_batch_size
            chunks = range(0, len(texts), size)
            if show:
                from tqdm import tqdm

                chunks = tqdm(chunks, desc="embedding catalog", unit="batch")
            vecs = np.concatenate([np.asarray(self._embedder.embed(texts[i:i + size]),
                                              dtype=np.float32) for i in chunks])
        if vecs.shape != (len(texts), dim) or not np.isfinite(vecs).all():
            raise BrainError(f"the embedder returned {vecs.shape} (or non-finite values) for "
                             f"{len(texts)} texts; expected ({len(texts)}, {dim})")
        return vecs

    # -- observe ---------------------------------------------------------------------------

    def observe(self, event: ViewingEvent) -> int:
        """Store one view; returns its sequence number once it is durable.

        Raises ``InvalidEvent`` (bad fraction, NaN, bad time or context),
        ``OutOfOrderEvent`` (older than the last event by more than
        ``time_tolerance_s``) or ``UnknownContent``; nothing is written then.
        """
        with self._mutex:
            mem = self._memory
            check_event(event)
            s = self._settings
            pos = self._catalog.position.get(event.content_id)
            if pos is None:
                raise UnknownContent(event.content_id)
            ts = float(event.timestamp)
            last_ts = self._meta.get("last_ts")
            if last_ts is not None and ts < float(last_ts) - s.time_tolerance_s:
                raise OutOfOrderEvent(ts, float(last_ts), s.time_tolerance_s)
            fraction = float(event.watch_fraction)
            success = fraction >= s.success_threshold
            weight = view_weight(fraction, s.success_threshold, s.abandoned_weight)
            emb = self._catalog.embeddings[pos]
            key = _normalized(self._profile) if np.any(self._profile) else emb.copy()
            profile = update_profile(self._profile, emb, weight, s.content_decay)
            stats = {"views": self._profile_stats.get("views", 0.0) + 1,
                     "successes": self._profile_stats.get("successes", 0.0) + float(success)}
            part = event_daypart(ts, event.context, s.utc_offset_s)
            counts: dict[tuple[str, str], tuple[float, float]] = {}
            for g in ["", *self._catalog.genre_keys(pos)]:
                for p in (part, ALL_DAY):
                    succ, views = counts.get((p, g)) or self._counts.get((p, g), (0.0, 0.0))
                    counts[(p, g)] = (succ + weight, views + 1.0)
            views, succs, _, _ = self._seen.get(event.content_id, (0, 0.0, 0.0, 0.0))
            seen = (views + 1, succs + float(success), ts, fraction)
            seq = int(self._meta.get("next_episode", 1))
            lib = self._lib
            change = lib.observe(key, event.content_id, success, ts)
            episode = Episode(seq, event.content_id, fraction, ts,
                              dict(event.context) if event.context else None)
            try:
                mem.write_view(ViewWrite(episode=episode, seen=seen, profile=profile,
                                         profile_stats=stats, patterns_put=change.put,
                                         patterns_delete=change.delete,
                                         next_pattern=change.next_pid, counts=counts))
            except BaseException:
                # The index moved ahead of LMDB: rebuild the library from what is stored.
                self._library = SkillLibrary(
                    _new_index(s, self._embedder.dim, s.pattern_capacity),
                    s.pattern_merge_threshold, int(self._meta.get("next_pattern", 1)))
                self._library.load(mem.load_patterns())
                raise
            # Committed: now the RAM state follows.
            self._profile = profile
            self._profile_stats = stats
            self._counts.update(counts)
            self._ctx_cache.clear()
            self._seen[event.content_id] = seen
            self._watched[pos] = True
            self._recent.appendleft((pos, fraction, ts))
            self._meta.update({"next_episode": seq + 1, "next_pattern": change.next_pid,
                               "last_ts": max(ts, float(last_ts) if last_ts is not None else ts)})
            if seq % REMAP_EVERY == 0:
                # Each commit maps a few more pages of the file (~35 KB a view with the
                # kernel's fault-around); unmapping now and then keeps RSS flat.
                mem.remap()
            return seq

    def _refresh_watched(self) -> None:
        mask = np.zeros(len(self._catalog), dtype=bool)
        for cid in self._seen:
            pos = self._catalog.position.get(cid)
            if pos is not None:
                mask[pos] = True
        self._watched = mask

    # -- recommend ---------------------------------------------------------------------------

    def recommend(self, k: int = 10, timestamp: float | None = None,
                  context: Mapping[str, str] | None = None) -> list[Recommendation]:
        """The top ``k`` unwatched titles, best first, each with a reason.

        ``timestamp`` (Unix seconds, default now) and ``context`` choose the daypart.
        """
        with self._mutex:
            self._memory  # noqa: B018 — raises BrainClosed
            s = self._settings
            w = s.recommender
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= w.max_k:
                raise BadInput(f"k must be an integer in [1, {w.max_k}], got {k!r}")
            if timestamp is None:
                timestamp = self._wall()
            if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) \
                    or not math.isfinite(timestamp):
                raise InvalidEvent("timestamp", f"must be a finite number, got {timestamp!r}")
            check_context(context)
            cat = self._catalog
            n = len(cat)
            if n == 0:
                return []
            hist = np.fromiter((p for p, _, _ in self._recent), dtype=np.int64,
                               count=len(self._recent))
            fracs = np.fromiter((f for _, f, _ in self._recent), dtype=np.float32,
                                count=len(self._recent))
            weights = rk.view_weights(fracs, decay=s.recency_decay,
                                      success_threshold=s.success_threshold,
                                      abandoned_weight=s.abandoned_weight)
            emb = cat.embeddings
            query = _normalized(self._profile)
            # Content: each title against the last few views one by one (a power mean
            # of the cosines, docs/brain.md §4), plus the titles of the nearest patterns.
            m = min(w.similar_history, hist.size)
            compared = hist[:m]
            sim_w = rk.view_weights(fracs[:m], decay=w.similar_decay,
                                    success_threshold=s.success_threshold,
                                    abandoned_weight=s.abandoned_weight)
            if w.pattern > 0 and np.any(query):
                near = [(sim, r) for sim, r in self._lib.nearest(query, w.pattern_neighbours)
                        if r.content_id in cat.position]
                if near:
                    pw = rk.pattern_weights(
                        np.asarray([x for x, _ in near], np.float32),
                        np.asarray([(r.successes + 1) / (r.samples + 2) for _, r in near],
                                   np.float32), w.pattern)
                    compared = np.concatenate([compared, np.asarray(
                        [cat.position[r.content_id] for _, r in near], dtype=np.int64)])
                    sim_w = np.concatenate([sim_w, pw]).astype(np.float32)
            crowd = self._crowd
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
            ranked = rk.rank(cand, signals, w, k, exclude=self._watched[pick],
                             first_genre=cat.first_genre[pick], embeddings=cand_emb, later=later)
            return self._explain(ranked, hist, fracs, cf_anchor, part)

    def _similarity_rows(self, positions: I64) -> F32:
        """Each title's cosine to every catalog title, ``(len(positions), n)``.

        A row is computed once (~1 ms at 10,000 titles) and kept while its title
        stays among the compared ones: after a view, one new row. Rows of an
        older catalog generation are dropped.
        """
        gen = int(self._meta.get("catalog_gen", 0))
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
        gen = int(self._meta.get("catalog_gen", 0))
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
        parts = [np.flatnonzero(cf).astype(np.int64), self._crowd.top_items[: w.popular_candidates]]
        index = self._catalog_ann() if np.any(query) or compared.size else None
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
            aff = genre_affinity(self._counts, cat.genre_vocabulary(), key)
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
        aff = genre_affinity(self._counts, vocab, part)
        return names[int(np.argmax(aff))].strip()

    # -- federation ----------------------------------------------------------------------

    def apply_crowd(
        self,
        neighbours: Mapping[str, Sequence[tuple[str, float]]],
        popularity: Mapping[str, float],
        trends: Sequence[tuple[str, float]],
        version: int,
    ) -> None:
        """Merge what the crowd knows (a pull's delta) in one transaction.

        ``neighbours``: title → its neighbour list (replaces that title's list; an
        empty list deletes it). ``popularity``: title → score (replaces). ``trends``:
        the region's trending titles (replaces the whole list). ``version`` must not
        be older than the applied one (``StaleCrowdVersion``).
        """
        with self._mutex:
            mem = self._memory
            update = check_crowd_update(neighbours, popularity, trends, version,
                                        self._crowd_state.version)
            mem.write_crowd(update)
            merge(self._crowd_state, update)
            self._crowd = CrowdView(self._crowd_state, self._catalog)

    def recent_titles(self, max_titles: int = 50) -> list[str]:
        """The most recently watched distinct titles, newest first."""
        with self._mutex:
            self._memory  # noqa: B018
            if isinstance(max_titles, bool) or not isinstance(max_titles, int) \
                    or not 1 <= max_titles <= 10_000:
                raise BadInput(f"max_titles must be an integer in [1, 10000], got {max_titles!r}")
            order = sorted(self._seen.items(), key=lambda kv: -kv[1][2])
            return [cid for cid, _ in order[:max_titles]]

    def coview_pairs(self, max_titles: int = 50) -> list[tuple[str, str]]:
        """Unordered pairs (a < b) among the recent distinct titles: a co-view report's input.

        Raw, unrandomized: the privacy layer randomizes and seals them before anything
        leaves the TV.
        """
        titles = sorted(self.recent_titles(max_titles))
        return [(a, b) for i, a in enumerate(titles) for b in titles[i + 1:]]

    # -- sync state and the outbound queue (for the SyncAgent) -----------------------------

    def sync_state(self, key: str) -> bytes | None:
        """A value the SyncAgent stored under ``key`` (last global version, sequence...)."""
        with self._mutex:
            return self._memory.get_sync(_sync_key(key))

    def set_sync_state(self, key: str, value: bytes) -> None:
        with self._mutex:
            if not isinstance(value, bytes) or len(value) > 1 << 20:
                raise BadInput("a sync value is at most 1 MiB of bytes")
            self._memory.put_sync(_sync_key(key), value)

    def enqueue_outbound(self, payload: bytes) -> int:
        """Queue a sealed report for the next push (durable); returns its sequence."""
        with self._mutex:
            if not isinstance(payload, bytes) or not 0 < len(payload) <= 1 << 20:
                raise BadInput("an outbound payload is 1 byte to 1 MiB of bytes")
            return self._memory.enqueue(payload)

    def peek_outbound(self, n: int = 16) -> list[tuple[int, bytes]]:
        """The oldest ``n`` queued payloads with their sequence numbers."""
        with self._mutex:
            return self._memory.peek(max(0, int(n)))

    def ack_outbound(self, up_to: int) -> int:
        """Drop queued payloads with sequence ≤ ``up_to`` (pushed); returns how many."""
        with self._mutex:
            return self._memory.ack(int(up_to))

    # -- inspection and maintenance -------------------------------------------------------

    def history(self, limit: int = 50) -> list[ViewingEvent]:
        """The last ``limit`` stored views, newest first."""
        with self._mutex:
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
                raise BadInput(f"limit must be an integer in [1, 1000000], got {limit!r}")
            return [ViewingEvent(e.content_id, e.watch_fraction, e.timestamp, e.context)
                    for e in self._memory.recent_episodes(limit)]

    def consolidate(self, threshold: float = 0.8) -> int:
        """Cluster the patterns into the reasoning bank; returns the number of clusters."""
        with self._mutex:
            clusters = consolidate(self._lib.records(), threshold)
            self._memory.replace_consolidated(clusters)
            return len(clusters)

    def status(self) -> dict[str, Any]:
        """Sizes, counters and settings worth showing (``omega-node tv status``)."""
        with self._mutex:
            stats = self._memory.stats()
            e = stats["entries"]
            return {
                "data_dir": str(self._path),
                "schema": self._meta.get("schema"),
                "catalog": len(self._catalog),
                "episodes": e["episodes"],
                "watched_titles": e["seen"],
                "patterns": len(self._lib),
                "pattern_capacity": self._settings.pattern_capacity,
                "consolidated": e["consolidated"],
                "crowd_version": self._crowd_state.version,
                "crowd_titles": len(self._crowd.neighbours),
                "last_timestamp": self._meta.get("last_ts"),
                "embedder": type(self._embedder).__name__,
                "dim": self._embedder.dim,
                "durability": self._settings.durability,
                "lmdb_used_bytes": stats["used_bytes"],
                "lmdb_map_size": stats["map_size"],
            }

    def load_patterns(self, patterns: Sequence[tuple[F32, str, float, int, float]]) -> int:
        """Bulk-load patterns (key, content id, successes, samples, last time).

        For importing a skill library and for benchmarks; one transaction.
        Returns how many patterns the library holds afterwards.
        """
        with self._mutex:
            mem = self._memory
            lib = self._lib
            recs: list[PatternRecord] = []
            pid = lib.next_pid
            for key, cid, succ, samples, ts in patterns:
                if cid not in self._catalog:
                    raise UnknownContent(cid)
                vec = _normalized(np.asarray(key, dtype=np.float32).reshape(-1))
                if vec.size != self._embedder.dim or not np.isfinite(vec).all():
                    raise BadInput(f"pattern key must be {self._embedder.dim} finite floats")
                recs.append(PatternRecord(pid, cid, float(succ), int(samples), float(ts), vec))
                pid += 1
            before = set(lib.entries)
            lib.load(recs)
            kept = [r for r in recs if r.pid in lib.entries]
            evicted = before - set(lib.entries)
            mem.write_patterns(kept, pid, sorted(evicted))
            lib.next_pid = pid
            self._meta["next_pattern"] = pid
            if len(recs) >= BULK_ITEMS:
                self._release_memory()
            return len(lib)
