"""The ONNX embedder with the real model (``-m model``): the shipped MiniLM file and tokenizer.

One re-quantization per session (module fixture), reused by every test; the
padding check runs the original session on the shipped tokenizer's own padding,
an oracle independent of the embedder's code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from omega.brain.embedder import (
    EmbedderError,
    EmbedderSettings,
    HashEmbedder,
    InvalidText,
    OnnxEmbedder,
)
from omega.brain.onnx_embedder import default_model_path
from omega.brain.onnx_model import OnnxSession, cached_model_path, file_sha256

pytestmark = pytest.mark.model

TITLES = [
    "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy",
    "Toy Story 2 (1999). Genres: Adventure, Animation, Children, Comedy, Fantasy",
    "Heat (1995). Genres: Action, Crime, Thriller",
    "Jumanji (1995). Genres: Adventure, Children, Fantasy",
    "Grumpier Old Men (1995). Genres: Comedy, Romance",
    "Sense and Sensibility (1995). Genres: Drama, Romance",
    "The Godfather (1972). Genres: Crime, Drama",
    "The Godfather: Part II (1974). Genres: Crime, Drama",
    "Alien (1979). Genres: Horror, Sci-Fi",
    "Aliens (1986). Genres: Action, Adventure, Horror, Sci-Fi",
    "March of the Penguins (Marche de l'empereur, La) (2005). Genres: Documentary",
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001). Genres: Comedy, Romance",
    "Spirited Away (Sen to Chihiro no kamikakushi) (2001). Genres: Adventure, Animation, Fantasy",
    "x",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def quantized(cache: Path) -> OnnxEmbedder:
    """The default embedder, loaded over a damaged cache file (one re-quantization serves
    both the recovery check and every other test; a clean cache takes the same path)."""
    source, _ = default_model_path()
    damaged = cached_model_path(cache, source, file_sha256(source))
    damaged.write_bytes(b"\x08\x07" + os.urandom(50_000))
    emb = OnnxEmbedder.from_settings(EmbedderSettings(), cache)
    assert emb.info.cache_hit is False and emb.info.model_path == damaged
    return emb


@pytest.fixture(scope="module")
def reloaded(quantized: OnnxEmbedder, cache: Path) -> OnnxEmbedder:
    """A second start on the same cache directory."""
    return OnnxEmbedder.from_settings(EmbedderSettings(), cache)


@pytest.fixture(scope="module")
def original(cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder.from_settings(EmbedderSettings(quantize="none", batch_size=8), cache)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    c: np.ndarray = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return c


def test_dims_dtype_and_unit_norm(quantized: OnnxEmbedder, original: OnnxEmbedder) -> None:
    for emb in (quantized, original):
        v = emb.embed(TITLES)
        assert emb.dim == 384 and v.shape == (len(TITLES), 384) and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        assert emb.embed([]).shape == (0, 384)


def test_deterministic(quantized: OnnxEmbedder, reloaded: OnnxEmbedder) -> None:
    a = quantized.embed(TITLES[:3])
    np.testing.assert_array_equal(a, quantized.embed(TITLES[:3]))
    np.testing.assert_array_equal(a, reloaded.embed(TITLES[:3]))


def test_requantized_cache_is_made_once_and_reused(quantized: OnnxEmbedder,
                                                   reloaded: OnnxEmbedder, cache: Path) -> None:
    path = quantized.info.model_path
    assert path.parent == cache and path.is_file()
    assert path.name.startswith("model-" + quantized.info.source_sha256[:16])
    stat = path.stat()
    assert reloaded.info.cache_hit is True and reloaded.info.model_path == path
    OnnxEmbedder.from_settings(EmbedderSettings(batch_size=4), cache)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    models = [p.name for p in cache.iterdir()]
    assert models == [path.name], "no temporary files left behind"
    assert reloaded.model_id == quantized.model_id and "per_channel" in reloaded.model_id


def test_padding_off_matches_the_shipped_padded_pipeline(original: OnnxEmbedder) -> None:
    """The shipped tokenizer pads to 128; ours does not: same vectors (original model)."""
    tok = Tokenizer.from_file(str(original.info.tokenizer_path))
    assert tok.padding is not None and tok.padding["length"] == 128, "shipped as padded"
    session = OnnxSession(original.info.model_path)
    rows = []
    for text in TITLES:
        enc = tok.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        assert ids.shape == (1, 128)
        hidden = session.run(ids, mask)
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum()
        rows.append(pooled[0] / np.linalg.norm(pooled[0]))
    ours = np.stack([original.embed([t])[0] for t in TITLES])
    assert cosines(np.stack(rows), ours).min() > 0.9999


def test_batch_equals_single(quantized: OnnxEmbedder, original: OnnxEmbedder) -> None:
    # Default (per-channel, one text per run): bit-identical.
    single = np.stack([quantized.embed([t])[0] for t in TITLES])
    np.testing.assert_array_equal(quantized.embed(TITLES), single)
    # Original model, padded batches of 8 of mixed lengths: same vectors.
    single = np.stack([original.embed([t])[0] for t in TITLES])
    assert cosines(original.embed(TITLES), single).min() > 0.9999
    assert cosines(original.embed_catalog(TITLES[::-1])[::-1], single).min() > 0.9999


def test_requantized_is_close_to_the_original(quantized: OnnxEmbedder,
                                              original: OnnxEmbedder) -> None:
    c = cosines(quantized.embed(TITLES), original.embed(TITLES))
    assert c.mean() > 0.985 and c.min() > 0.97


def test_similar_titles_are_closer_than_unrelated(quantized: OnnxEmbedder) -> None:
    v = quantized.embed(TITLES)
    sim = v @ v.T
    for a, b, far in ((0, 1, 2), (6, 7, 10), (8, 9, 5)):  # sequels vs unrelated titles
        assert sim[a, b] > sim[a, far] + 0.1, (TITLES[a], TITLES[b], TITLES[far])
        assert int(np.argsort(-sim[a])[1]) == b


def test_long_text_is_truncated_by_tokens(quantized: OnnxEmbedder) -> None:
    # "film" is one token: 126 of them plus [CLS] and [SEP] fill 128 tokens.
    at_limit = quantized.embed([" ".join(["film"] * 126)])
    beyond = quantized.embed([" ".join(["film"] * 5000)])
    np.testing.assert_array_equal(at_limit, beyond)
    shorter = quantized.embed([" ".join(["film"] * 60)])
    assert not np.array_equal(at_limit, shorter)


def test_bad_text_is_refused_and_nothing_is_embedded(quantized: OnnxEmbedder) -> None:
    with pytest.raises(InvalidText, match=r"texts\[1\]"):
        quantized.embed(["fine", ""])
    with pytest.raises(InvalidText):
        quantized.embed("a bare string")


def test_catalog_progress_bar(quantized: OnnxEmbedder, capsys: pytest.CaptureFixture[str]) -> None:
    out = quantized.embed_catalog(TITLES, progress=True)
    np.testing.assert_array_equal(out, quantized.embed(TITLES))
    assert "embedding" in capsys.readouterr().err


def test_missing_or_broken_files_are_typed_errors(tmp_path: Path, original: OnnxEmbedder) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        OnnxEmbedder.from_settings(EmbedderSettings(model_path=tmp_path / "nope.onnx"), tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(EmbedderError, match="cannot load"):
        OnnxEmbedder.from_settings(EmbedderSettings(model_path=junk, quantize="none"), tmp_path)
    bad_tok = tmp_path / "tokenizer.json"
    bad_tok.write_text("{not json")
    with pytest.raises(EmbedderError, match="tokenizer"):
        OnnxEmbedder.from_settings(EmbedderSettings(tokenizer_path=bad_tok, quantize="none"),
                                   tmp_path)


def test_hash_and_onnx_embedders_share_the_interface(quantized: OnnxEmbedder) -> None:
    for emb in (quantized, HashEmbedder()):
        assert emb.embed_catalog(TITLES[:2]).shape == (2, emb.dim)
