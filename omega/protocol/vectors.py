"""Quantization of wire vectors: 384-dim embeddings as little-endian float16 bytes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from omega.protocol.checks import Invalid, embedding
from omega.protocol.errors import BadRequest
from omega.protocol.limits import EMBEDDING_DIM

__all__ = ["embedding_from_wire", "embedding_to_wire"]

_CHECK = embedding()
_F16 = np.dtype("<f2")


def embedding_to_wire(vector: npt.ArrayLike) -> bytes:
    """A 384-dim vector as 768 bytes of float16; raises ``BadRequest`` if the vector
    has another shape, a NaN/inf, or a value float16 cannot hold (|x| > 65504)."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.shape != (EMBEDDING_DIM,):
        raise BadRequest(f"embedding must have shape ({EMBEDDING_DIM},), got {arr.shape}")
    with np.errstate(over="ignore"):
        half = arr.astype(_F16)
    if not np.isfinite(half).all():
        raise BadRequest("embedding has a NaN, infinite or out-of-range value")
    return half.tobytes()


def embedding_from_wire(data: bytes) -> npt.NDArray[np.float32]:
    """768 float16 bytes back to a float32 vector of shape (384,)."""
    try:
        _CHECK(data)
    except Invalid as exc:
        raise BadRequest(exc.reason) from None
    return np.frombuffer(data, dtype=_F16).astype(np.float32)
