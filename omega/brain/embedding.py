"""Embedding the catalog's texts: batches, a progress bar, and a check of the result."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from omega.brain.embedder import Embedder
from omega.brain.settings import BrainSettings
from omega.errors import BrainError

__all__ = ["embed_texts"]

F32 = npt.NDArray[np.float32]


def embed_texts(embedder: Embedder, texts: Sequence[str], settings: BrainSettings,
                progress: bool | None = None) -> F32:
    """``(len(texts), dim)`` float32, finite. ``progress``: a bar on stderr (default:
    from ``settings.progress_min_items`` texts). ``BrainError`` if the embedder
    returns the wrong shape or non-finite values."""
    dim = embedder.dim
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    show = progress if progress is not None else len(texts) >= settings.progress_min_items
    embed_catalog = getattr(embedder, "embed_catalog", None)
    if callable(embed_catalog):
        vecs = np.asarray(embed_catalog(list(texts), progress=show), dtype=np.float32)
    else:
        size = settings.embed_batch_size
        chunks = range(0, len(texts), size)
        if show:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="embedding catalog", unit="batch")
        vecs = np.concatenate([np.asarray(embedder.embed(texts[i:i + size]), dtype=np.float32)
                               for i in chunks])
    if vecs.shape != (len(texts), dim) or not np.isfinite(vecs).all():
        raise BrainError(f"the embedder returned {vecs.shape} (or non-finite values) for "
                         f"{len(texts)} texts; expected ({len(texts)}, {dim})")
    return vecs
