"""The public API of the TV brain: ``Brain``, ``Content``, ``ViewingEvent``, ``Recommendation``.

    from omega import Brain, Content, ViewingEvent

    with Brain.open("var/tv") as brain:
        brain.add_content([Content(id="m1", title="Heat (1995)", genres=("Action", "Crime"))])
        brain.observe(ViewingEvent(content_id="m1", watch_fraction=0.95, timestamp=1_700_000_000))
        for rec in brain.recommend(k=10, timestamp=1_700_000_500):
            print(rec.title, rec.reason)

One ``Brain`` per data directory (an exclusive lock guards it). Every write is
one LMDB transaction, committed before the call returns; bad input raises a
``omega.brain.errors.BadInput`` subclass and changes nothing. The catalog is
embedded once (``add_content``); ``observe`` and ``recommend`` embed nothing.
Calls are serialized by a lock, so one brain may be shared by threads.

``Brain`` is the face; each job has its module: ``lock``, ``loading``, ``memory``
(LMDB), ``catalog``/``catalog_update``, ``embedding``, ``indexes``, ``learning``
and ``viewer`` (what a view changes), ``ranking``, ``crowd``, ``outbox``, ``heap``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain.catalog import Catalog
from omega.brain.catalog_update import CatalogUpdate, given_vectors, plan_update, plan_writes
from omega.brain.content import Content, Recommendation, ViewingEvent
from omega.brain.crowd import CrowdView, check_crowd_update, merge
from omega.brain.embedder import Embedder
from omega.brain.embedding import embed_texts
from omega.brain.errors import BrainClosed
from omega.brain.heap import trim_heap
from omega.brain.indexes import BrainIndexes, open_library, stamps
from omega.brain.learning import check_view, coview_pairs, learn
from omega.brain.loading import load_catalog, open_storage
from omega.brain.lock import DirLock
from omega.brain.maintenance import PatternRow, history, load_patterns, status_report
from omega.brain.memory import Episode, Memory, ViewWrite
from omega.brain.outbox import SyncStore
from omega.brain.patterns import SkillLibrary, consolidate
from omega.brain.profile import event_daypart
from omega.brain.ranking import Ranker, ViewerState, check_request
from omega.brain.settings import BrainSettings
from omega.brain.viewer import ViewerMemory
from omega.index import VectorIndex

__all__ = ["Brain", "CatalogUpdate", "Content", "Embedder", "Recommendation", "ViewingEvent"]

log = logging.getLogger("omega.brain")

F32 = npt.NDArray[np.float32]
#: Views between two ``Memory.remap`` calls (~2 ms each).
REMAP_EVERY = 250
#: Writes this large are followed by ``_release_memory``.
BULK_ITEMS = 1000


class Brain:
    """The TV's recommender with its durable memory. Open with ``Brain.open``."""

    def __init__(self, *, path: Path, settings: BrainSettings, embedder: Embedder,
                 memory: Memory, lock: DirLock, wall: Callable[[], float]) -> None:
        self._path = path
        self._settings = settings
        self._embedder = embedder
        self._mem: Memory | None = memory
        self._lock = lock
        self._wall = wall
        self._mutex = threading.RLock()
        self._catalog = Catalog(embedder.dim)
        self._indexes = BrainIndexes(path / "index", settings)
        self._library: SkillLibrary | None = None
        self._viewer = ViewerMemory(embedder.dim, settings.history_length)
        self._ranker = Ranker(settings, self._catalog)
        self._crowd_state = memory.load_crowd()
        self._crowd = CrowdView(self._crowd_state, self._catalog)
        self._meta: dict[str, Any] = {}

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
        lock, memory, embedder = open_storage(path, settings, embedder)
        try:
            brain = cls(path=path, settings=settings, embedder=embedder, memory=memory,
                        lock=lock, wall=wall)
            brain._load()
            return brain
        except BaseException:
            memory.close()
            lock.release()
            raise

    def _load(self) -> None:
        mem = self._memory
        started = time.monotonic()
        self._meta = mem.meta()
        load_catalog(mem, self._embedder, self._settings, self._catalog, self._meta)
        self._viewer.load(mem, self._catalog)
        self._crowd = CrowdView(self._crowd_state, self._catalog)
        self._library = self._indexes.open(self._stamps(), mem, self._embedder.dim,
                                           int(self._meta.get("next_pattern", 1)))
        self._release_memory()
        log.info("brain open", extra={"fields": {
            "path": str(self._path), "catalog": len(self._catalog),
            "patterns": len(self._lib), "episodes": self._meta.get("next_episode", 1) - 1,
            "seconds": round(time.monotonic() - started, 3)}})

    def _release_memory(self) -> None:
        """After a bulk read or write: unmap LMDB pages, hand freed heap back to the OS."""
        self._memory.remap()
        trim_heap()

    def _stamps(self) -> dict[str, dict[str, int]]:
        return stamps(self._embedder.dim, self._meta, len(self._catalog))

    def _catalog_ann(self) -> VectorIndex:
        return self._indexes.catalog_ann(self._catalog.embeddings)

    def close(self) -> None:
        """Save the indexes (a cache: LMDB is the truth) and release the directory."""
        with self._mutex:
            if self._mem is None:
                return
            if self._library is not None:
                self._indexes.save(self._stamps(), self._library)
            self._mem.close()
            self._mem = None
            self._lock.release()

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
            return self._catalog.vectors_of(content_ids)

    def content_ids(self) -> list[str]:
        """Every catalog id, in the order titles were first added."""
        with self._mutex:
            return list(self._catalog.ids)

    # -- catalog -------------------------------------------------------------------------

    def add_content(self, items: Iterable[Content], *, progress: bool | None = None,
                    vectors: Mapping[str, npt.ArrayLike] | None = None) -> CatalogUpdate:
        """Add or update catalog items; new or changed text is embedded here, once.

        A repeated id updates the item (the last one in ``items`` wins). All items
        are validated and embedded before anything is written, then stored in one
        transaction. ``progress``: show a progress bar (default: large catalogs).
        ``vectors``: embeddings that come with items (the crowd's new content, as
        float16 on the wire): used instead of embedding their text here.
        """
        given = given_vectors(vectors, self._embedder.dim)
        with self._mutex:
            mem = self._memory
            cat = self._catalog
            plan = plan_update(cat, items, self._settings.max_catalog_items, given)
            if not plan.records:
                return CatalogUpdate(0, 0, plan.unchanged)
            writes = plan_writes(plan, cat, given, lambda texts: embed_texts(
                self._embedder, texts, self._settings, progress))
            gen = int(self._meta.get("catalog_gen", 0)) + 1
            mem.write_catalog(writes, {"catalog_gen": gen, "next_idx": plan.next_idx})
            self._meta.update({"catalog_gen": gen, "next_idx": plan.next_idx})
            old_n = len(cat)
            cat.upsert(writes)
            self._indexes.changed(np.asarray(sorted({writes[i][0].idx for i in plan.changed}),
                                             dtype=np.int64), cat.embeddings)
            self._viewer.refresh_watched(cat)
            self._crowd = CrowdView(self._crowd_state, cat)
            added = plan.next_idx - old_n
            if len(plan.records) >= BULK_ITEMS:
                self._release_memory()
            log.info("catalog updated", extra={"fields": {
                "added": added, "updated": len(plan.records) - added,
                "embedded": len(plan.changed)}})
            return CatalogUpdate(added, len(plan.records) - added, plan.unchanged)

    # -- observe ---------------------------------------------------------------------------

    def observe(self, event: ViewingEvent) -> int:
        """Store one view; returns its sequence number once it is durable.

        Raises ``InvalidEvent`` (bad fraction, NaN, bad time or context),
        ``OutOfOrderEvent`` (older than the last event by more than
        ``time_tolerance_s``) or ``UnknownContent``; nothing is written then.
        """
        with self._mutex:
            mem = self._memory
            s = self._settings
            last_ts = self._meta.get("last_ts")
            pos, ts = check_view(event, self._catalog.position, last_ts, s.time_tolerance_s)
            fraction = float(event.watch_fraction)
            v = self._viewer
            up = learn(profile=v.profile, stats=v.profile_stats, counts=v.counts,
                       seen=v.seen.get(event.content_id), embedding=self._catalog.embeddings[pos],
                       genre_keys=self._catalog.genre_keys(pos), fraction=fraction, timestamp=ts,
                       daypart=event_daypart(ts, event.context, s.utc_offset_s), settings=s)
            seq = int(self._meta.get("next_episode", 1))
            change = self._lib.observe(up.key, event.content_id, up.success, ts)
            episode = Episode(seq, event.content_id, fraction, ts,
                              dict(event.context) if event.context else None)
            try:
                mem.write_view(ViewWrite(episode=episode, seen=up.seen, profile=up.profile,
                                         profile_stats=up.stats, patterns_put=change.put,
                                         patterns_delete=change.delete,
                                         next_pattern=change.next_pid, counts=up.counts))
            except BaseException:
                # The index moved ahead of LMDB: rebuild the library from what is stored.
                self._library = open_library(None, mem, s, self._embedder.dim,
                                             int(self._meta.get("next_pattern", 1)))
                raise
            # Committed: now the RAM state follows.
            v.apply_view(event.content_id, pos, fraction, ts, up)
            self._ranker.forget_context()
            self._meta.update({"next_episode": seq + 1, "next_pattern": change.next_pid,
                               "last_ts": max(ts, float(last_ts) if last_ts is not None else ts)})
            if seq % REMAP_EVERY == 0:
                # Each commit maps a few more pages of the file (~35 KB a view with the
                # kernel's fault-around); unmapping now and then keeps RSS flat.
                mem.remap()
            return seq

    # -- recommend ---------------------------------------------------------------------------

    def recommend(self, k: int = 10, timestamp: float | None = None,
                  context: Mapping[str, str] | None = None) -> list[Recommendation]:
        """The top ``k`` unwatched titles, best first, each with a reason and its title.

        ``timestamp`` (Unix seconds, default now) and ``context`` choose the daypart.
        """
        with self._mutex:
            self._memory  # noqa: B018 — raises BrainClosed
            now = check_request(k, self._wall() if timestamp is None else timestamp, context,
                                self._settings.recommender.max_k)
            v = self._viewer
            state = ViewerState(
                recent=v.recent, profile=v.profile, library=self._lib, crowd=self._crowd,
                watched=v.watched, counts=v.counts,
                catalog_gen=int(self._meta.get("catalog_gen", 0)), catalog_ann=self._catalog_ann)
            return self._ranker.rank(state, k, now, context)

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
            update = check_crowd_update(neighbours, popularity, trends, version,
                                        self._crowd_state.version)
            self._memory.write_crowd(update)
            merge(self._crowd_state, update)
            self._crowd = CrowdView(self._crowd_state, self._catalog)

    def recent_titles(self, max_titles: int = 50) -> list[str]:
        """The most recently watched distinct titles, newest first."""
        with self._mutex:
            self._memory  # noqa: B018
            return self._viewer.recent_titles(max_titles)

    def coview_pairs(self, max_titles: int = 50) -> list[tuple[str, str]]:
        """Unordered pairs (a < b) among the recent distinct titles: a co-view report's input.

        Raw, unrandomized: the privacy layer randomizes and seals them before anything
        leaves the TV.
        """
        return coview_pairs(self.recent_titles(max_titles))

    # -- sync state and the outbound queue (for the SyncAgent; omega.brain.outbox) -----

    def sync_state(self, key: str) -> bytes | None:
        """A value the SyncAgent stored under ``key`` (last global version, sequence...)."""
        with self._mutex:
            return SyncStore(self._memory).get(key)

    def set_sync_state(self, key: str, value: bytes) -> None:
        with self._mutex:
            SyncStore(self._memory).put(key, value)

    def enqueue_outbound(self, payload: bytes) -> int:
        """Queue a sealed report for the next push (durable); returns its sequence."""
        with self._mutex:
            return SyncStore(self._memory).enqueue(payload)

    def peek_outbound(self, n: int = 16) -> list[tuple[int, bytes]]:
        """The oldest ``n`` queued payloads with their sequence numbers."""
        with self._mutex:
            return SyncStore(self._memory).peek(n)

    def ack_outbound(self, up_to: int) -> int:
        """Drop queued payloads with sequence ≤ ``up_to`` (pushed); returns how many."""
        with self._mutex:
            return SyncStore(self._memory).ack(up_to)

    # -- inspection and maintenance (omega.brain.maintenance) -----------------------------

    def history(self, limit: int = 50) -> list[ViewingEvent]:
        """The last ``limit`` stored views, newest first."""
        with self._mutex:
            return history(self._memory, limit)

    def consolidate(self, threshold: float = 0.8) -> int:
        """Cluster the patterns into the reasoning bank; returns the number of clusters."""
        with self._mutex:
            clusters = consolidate(self._lib.records(), threshold)
            self._memory.replace_consolidated(clusters)
            return len(clusters)

    def status(self) -> dict[str, Any]:
        """Sizes, counters and settings worth showing (``omega-node tv status``)."""
        with self._mutex:
            return status_report(
                self._memory, data_dir=str(self._path), schema=self._meta.get("schema"),
                catalog=len(self._catalog), patterns=len(self._lib),
                pattern_capacity=self._settings.pattern_capacity,
                crowd_version=self._crowd_state.version,
                crowd_titles=len(self._crowd.neighbours), last_timestamp=self._meta.get("last_ts"),
                embedder=type(self._embedder).__name__, dim=self._embedder.dim,
                durability=self._settings.durability)

    def load_patterns(self, patterns: Sequence[PatternRow]) -> int:
        """Bulk-load patterns (key, content id, successes, samples, last time).

        For importing a skill library and for benchmarks; one transaction.
        Returns how many patterns the library holds afterwards.
        """
        with self._mutex:
            pid = load_patterns(self._lib, self._memory, self._catalog, self._embedder.dim,
                                patterns)
            self._meta["next_pattern"] = pid
            if len(patterns) >= BULK_ITEMS:
                self._release_memory()
            return len(self._lib)
