"""The brain's two vector indexes on disk: a cache of what LMDB holds.

The catalog index (HNSW over every title's embedding) and the pattern index (the
skill library's keys) are saved at a clean close, with a stamp naming the LMDB
state they match. At open the stamp is read and deleted (the files fall behind at
the first write): a matching index is loaded, anything else is rebuilt from LMDB
(~1 s for 10,000 patterns; the catalog index on first need).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain.memory import Memory
from omega.brain.patterns import SkillLibrary
from omega.brain.settings import BrainSettings
from omega.index import VectorIndex, create_index

__all__ = ["BrainIndexes", "IndexFolder", "Stamps", "build_catalog_index", "new_index",
           "open_library", "stamps"]

log = logging.getLogger("omega.brain")

F32 = npt.NDArray[np.float32]
Stamps = dict[str, dict[str, int]]


def new_index(settings: BrainSettings, dim: int, capacity: int) -> VectorIndex:
    return create_index("hnsw", dim, capacity, settings.index)


def stamps(dim: int, meta: dict[str, Any], catalog_items: int) -> Stamps:
    """What each saved index must match to be reused (else it is rebuilt)."""
    gen = int(meta.get("catalog_gen", 0))
    return {
        "catalog": {"dim": dim, "catalog_gen": gen, "items": catalog_items},
        "patterns": {"dim": dim, "next_episode": int(meta.get("next_episode", 1)),
                     "next_pattern": int(meta.get("next_pattern", 1)), "catalog_gen": gen},
    }


def build_catalog_index(settings: BrainSettings, embeddings: F32) -> VectorIndex:
    """An HNSW index over the catalog (ids = positions), sized for the largest catalog."""
    index = new_index(settings, embeddings.shape[1], settings.max_catalog_items)
    if embeddings.shape[0]:
        index.add(np.arange(embeddings.shape[0], dtype=np.int64), embeddings)
    return index


def open_library(saved: VectorIndex | None, memory: Memory, settings: BrainSettings,
                 dim: int, next_pid: int) -> SkillLibrary:
    """The skill library on the saved pattern index when it holds exactly the stored
    patterns, else rebuilt from LMDB (streamed, in batches)."""
    s = settings
    stats = {r.pid: r for r in memory.load_patterns(keys=False)}
    if saved is not None and set(saved.ids().tolist()) == set(stats):
        lib = SkillLibrary(saved, s.pattern_merge_threshold, next_pid)
        lib.entries = stats
        return lib
    del stats
    lib = SkillLibrary(new_index(s, dim, s.pattern_capacity), s.pattern_merge_threshold, next_pid)
    lib.load(memory.load_patterns())
    return lib


class IndexFolder:
    """``<data_dir>/index``: the saved indexes and their stamp."""

    def __init__(self, folder: Path, settings: BrainSettings) -> None:
        self.folder = folder
        self._settings = settings

    def take(self, current: Stamps) -> tuple[VectorIndex | None, VectorIndex | None]:
        """The saved (catalog, patterns) indexes that match ``current``; the stamp is
        deleted, so a crash before the next clean close means a rebuild."""
        stamp_file = self.folder / "stamp.json"
        saved: Any = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(stamp_file.read_text())
        with contextlib.suppress(OSError):
            stamp_file.unlink()
        if not isinstance(saved, dict):
            return None, None
        catalog = patterns = None
        if saved.get("catalog") == current["catalog"]:
            catalog = self._try_load(self.folder / "catalog.index")
        if saved.get("patterns") == current["patterns"]:
            patterns = self._try_load(self.folder / "patterns.index")
        return catalog, patterns

    def save(self, current: Stamps, catalog: VectorIndex | None, patterns: VectorIndex) -> None:
        """Save both indexes, then the stamp; a failure only means a rebuild at next open."""
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            current = dict(current)
            if catalog is not None:
                catalog.save(self.folder / "catalog.index")  # atomic (tmp + rename)
            else:
                del current["catalog"]
            patterns.save(self.folder / "patterns.index")
            tmp = self.folder / "stamp.json.tmp"
            tmp.write_text(json.dumps(current))
            os.replace(tmp, self.folder / "stamp.json")
        except Exception as exc:  # the indexes are rebuilt at the next open
            log.warning("could not save the indexes",
                        extra={"fields": {"path": str(self.folder), "error": repr(exc)}})

    def _try_load(self, path: Path) -> VectorIndex | None:
        if not path.exists():
            return None
        try:
            from omega.index.hnsw import HnswIndex

            return HnswIndex.load(path, self._settings.index)
        except Exception as exc:  # a derived cache: any failure means "rebuild"
            log.warning("saved index unusable, rebuilding",
                        extra={"fields": {"path": str(path), "error": repr(exc)}})
            return None


class BrainIndexes:
    """The brain's catalog index (built on first need) and where both indexes are saved."""

    def __init__(self, folder: Path, settings: BrainSettings) -> None:
        self._folder = IndexFolder(folder, settings)
        self._settings = settings
        self.catalog: VectorIndex | None = None

    def open(self, current: Stamps, memory: Memory, dim: int, next_pid: int) -> SkillLibrary:
        """Take the saved indexes that match ``current``; returns the skill library."""
        self.catalog, saved_patterns = self._folder.take(current)
        return open_library(saved_patterns, memory, self._settings, dim, next_pid)

    def catalog_ann(self, embeddings: F32) -> VectorIndex:
        if self.catalog is None:
            self.catalog = build_catalog_index(self._settings, embeddings)
        return self.catalog

    def changed(self, positions: npt.NDArray[np.int64], embeddings: F32) -> None:
        """New or re-embedded titles (``add`` replaces a present title's vector)."""
        if positions.size and self.catalog is not None:
            self.catalog.add(positions, embeddings[positions])

    def save(self, current: Stamps, library: SkillLibrary) -> None:
        self._folder.save(current, self.catalog, library.index)
