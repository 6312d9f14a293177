"""The TV brain: catalog, memory, profile and recommender of one TV.

The public API is ``omega.brain.api.Brain`` (re-exported as ``omega.Brain``).
Modules, each owning one concern:

- ``api``: ``Brain`` — opening, the catalog, observe, recommend, crowd updates;
- ``content``: ``Content``, ``ViewingEvent``, ``Recommendation`` and their checks;
- ``memory``: the LMDB environment (the only module importing ``lmdb``);
- ``catalog``, ``crowd``, ``patterns``: the in-RAM views the recommender reads;
- ``profile``, ``recommender``: plain functions (profile, dayparts, ranking);
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
