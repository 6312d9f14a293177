"""Opening a brain's storage, loading its catalog, re-embedding it if the model changed.

A probe text's vector is stored with the catalog; at open it is embedded again
and compared: a different model (or dimension) means every stored vector, the
profile and the patterns live in another space, so the catalog is re-embedded,
the profile rebuilt from the episode log, and the patterns left to regrow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain.catalog import Catalog
from omega.brain.content import Content, content_text
from omega.brain.embedder import Embedder
from omega.brain.embedding import embed_texts
from omega.brain.lock import DirLock
from omega.brain.memory import CatalogRecord, Memory
from omega.brain.profile import update_profile, view_weight
from omega.brain.settings import BrainSettings

__all__ = ["PROBE_TEXT", "as_content", "default_embedder", "load_catalog", "open_storage"]

log = logging.getLogger("omega.brain")

F32 = npt.NDArray[np.float32]
PROBE_TEXT = "omega embedder probe: Heat (1995). Genres: Action, Crime, Thriller."


def default_embedder(settings: BrainSettings, cache_dir: Path) -> Embedder:
    """The configured ONNX embedder (its model file cached in ``cache_dir``)."""
    from omega.brain.embedder import OnnxEmbedder

    emb: Embedder = OnnxEmbedder.from_settings(settings.embedder, cache_dir)
    return emb


def open_storage(path: Path, settings: BrainSettings, embedder: Embedder | None
                 ) -> tuple[DirLock, Memory, Embedder]:
    """Lock the directory, open its LMDB and the embedder; nothing stays open on failure."""
    lock = DirLock.acquire(path)
    memory: Memory | None = None
    try:
        memory = Memory.open(path / "memory", map_size=settings.map_size,
                             durability=settings.durability)
        if embedder is None:
            embedder = default_embedder(settings, settings.model_cache_dir or path / "cache")
        return lock, memory, embedder
    except BaseException:
        if memory is not None:
            memory.close()
        lock.release()
        raise


def as_content(rec: CatalogRecord) -> Content:
    return Content(id=rec.content_id, title=rec.title, genres=rec.genres,
                   description=rec.description, year=rec.year,
                   duration_min=rec.duration_min, metadata=dict(rec.metadata))


def load_catalog(mem: Memory, embedder: Embedder, settings: BrainSettings, catalog: Catalog,
                 meta: dict[str, Any]) -> None:
    """Fill ``catalog`` from LMDB (re-embedding it if the model changed); ``meta`` follows."""
    dim = embedder.dim
    records, matrix = mem.load_catalog_arrays(dim)
    probe = embedder.embed([PROBE_TEXT])[0].astype(np.float32)
    stored_probe = meta.get("embedder_probe")
    same_model = (
        meta.get("dim") == dim and isinstance(stored_probe, bytes)
        and len(stored_probe) == 4 * dim
        and float(np.frombuffer(stored_probe, dtype=np.float32) @ probe) > 0.999
    )
    if records and not same_model:
        log.warning("embedder changed: re-embedding the catalog",
                    extra={"fields": {"items": len(records), "dim": dim}})
        del matrix
        _reembed(mem, embedder, settings, catalog, meta, records, probe)
        return
    catalog.load(records, matrix)
    if not records:
        mem.put_meta({"dim": dim, "embedder_probe": probe.tobytes()})
        meta.update({"dim": dim, "embedder_probe": probe.tobytes()})


def _reembed(mem: Memory, embedder: Embedder, settings: BrainSettings, catalog: Catalog,
             meta: dict[str, Any], records: list[CatalogRecord], probe: F32) -> None:
    vecs = embed_texts(embedder, [content_text(as_content(rec)) for rec in records], settings)
    fresh = [(rec, vecs[i]) for i, rec in enumerate(records)]
    gen = int(meta.get("catalog_gen", 0)) + 1
    new_meta = {"dim": embedder.dim, "embedder_probe": probe.tobytes(), "catalog_gen": gen}
    mem.write_catalog(fresh, new_meta)
    meta.update(new_meta)
    catalog.upsert(fresh)
    # Profile and pattern keys lived in the old space: rebuild the profile from
    # the episode log, drop the patterns (they regrow with the next views).
    s = settings
    profile = np.zeros(embedder.dim, dtype=np.float32)
    for ep in mem.iter_episodes():
        pos = catalog.position.get(ep.content_id)
        if pos is not None:
            w = view_weight(ep.watch_fraction, s.success_threshold, s.abandoned_weight)
            profile = update_profile(profile, catalog.embeddings[pos], w, s.content_decay)
    mem.reset_profile(profile)
