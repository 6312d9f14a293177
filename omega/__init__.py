"""Omega: an edge-first recommendation system for smart TVs.

The public API for TV integrators is ``Brain`` with ``Content`` and
``ViewingEvent``; see ``omega.brain.api``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Brain", "Content", "Recommendation", "ViewingEvent", "__version__"]

if TYPE_CHECKING:
    from omega.brain.api import Brain, Content, Recommendation, ViewingEvent


def __getattr__(name: str) -> Any:
    # Lazy: `omega-node --role shard` must not pay for loading onnxruntime.
    if name in {"Brain", "Content", "Recommendation", "ViewingEvent"}:
        from omega.brain import api

        return getattr(api, name)
    raise AttributeError(f"module 'omega' has no attribute {name!r}")
