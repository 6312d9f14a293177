"""The TV brain: catalog, memory, profile and recommender of one TV.

The public API is ``omega.brain.api.Brain`` (re-exported as ``omega.Brain``).
Modules, each owning one concern:

- ``api``: ``Brain`` — the public face; it holds the lock and orchestrates;
- ``content``: ``Content``, ``ViewingEvent``, ``Recommendation`` and their checks;
- ``lock``: the data directory's exclusive lock; ``loading``: opening the storage,
  loading the catalog, re-embedding it when the model changed;
- ``memory``: the LMDB environment (the only module importing ``lmdb``);
- ``catalog`` (the catalog in RAM), ``catalog_update`` (planning an upsert),
  ``embedding`` (texts to vectors, with a progress bar), ``indexes`` (the saved
  HNSW indexes and their stamps);
- ``learning`` (what a view changes: plain functions), ``viewer`` (the viewer's
  state in RAM), ``patterns`` (the skill library);
- ``ranking`` (recommend's orchestration) over ``recommender`` and ``profile``
  (plain functions: ranking, profile, dayparts);
- ``crowd`` (what the crowd knows), ``outbox`` (the sync agent's state and queue),
  ``maintenance`` (bulk patterns, history, status), ``heap`` (freed memory back to
  the OS);
- ``embedder`` (+ ``onnx_embedder``, ``onnx_model``): text → vectors;
- ``settings``, ``errors``.

Nothing heavy is imported here: ``import omega.brain.settings`` must not load
onnxruntime or faiss (a shard reads its config too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Brain", "CatalogUpdate", "Content", "Recommendation", "ViewingEvent"]

if TYPE_CHECKING:
    from omega.brain.api import Brain, CatalogUpdate, Content, Recommendation, ViewingEvent


def __getattr__(name: str) -> Any:
    if name in __all__:
        from omega.brain import api

        return getattr(api, name)
    raise AttributeError(f"module 'omega.brain' has no attribute {name!r}")
