"""The embedder port without the model: HashEmbedder, text validation, settings, imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omega.brain.embedder import (
    Embedder,
    EmbedderSettings,
    HashEmbedder,
    InvalidText,
    check_texts,
)
from omega.errors import BrainError
from omega.schema import SettingError, load

ROOT = Path(__file__).resolve().parents[2]


def test_hash_embedder_shape_norm_and_protocol() -> None:
    emb = HashEmbedder()
    assert isinstance(emb, Embedder) and emb.dim == 384
    v = emb.embed(["Heat (1995). Genres: Action, Crime, Thriller", "a", "!!!"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert emb.embed([]).shape == (0, 384)
    assert HashEmbedder(dim=16).embed(["x"]).shape == (1, 16)


def test_hash_embedder_is_deterministic_across_instances_and_processes() -> None:
    text = "Toy Story (1995). Genres: Adventure, Animation, Children"
    a = HashEmbedder().embed([text])
    np.testing.assert_array_equal(a, HashEmbedder().embed([text]))
    # Another interpreter (another hash seed) gives the same bytes.
    code = ("import sys; from omega.brain.embedder import HashEmbedder; "
            f"sys.stdout.write(HashEmbedder().embed([{text!r}]).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT),
                                                    "PYTHONHASHSEED": "123"}, timeout=120)
    assert bytes.fromhex(out.stdout) == a.tobytes()


def test_hash_embedder_similar_strings_are_closer() -> None:
    emb = HashEmbedder()
    toy1, toy2, heat, doc = emb.embed([
        "Toy Story (1995). Genres: Adventure, Animation, Children",
        "Toy Story 2 (1999). Genres: Adventure, Animation, Children",
        "Heat (1995). Genres: Action, Crime, Thriller",
        "March of the Penguins (2005). Genres: Documentary",
    ])
    assert float(toy1 @ toy2) > 0.8
    assert float(toy1 @ toy2) > float(toy1 @ heat) + 0.2
    assert float(toy1 @ doc) < 0.5


@pytest.mark.parametrize("texts", [[""], ["ok", "   "], ["ok", None], ["ok", b"bytes"],
                                   "a bare string", b"bytes", 42])
def test_bad_texts_are_refused(texts: object) -> None:
    with pytest.raises(InvalidText) as info:
        HashEmbedder().embed(texts)  # type: ignore[arg-type]
    assert isinstance(info.value, BrainError) and isinstance(info.value, ValueError)


def test_check_texts_clips_huge_input() -> None:
    out = check_texts(("x" * 10_000, "short"), max_chars=100)
    assert [len(t) for t in out] == [100, 5]


def test_settings_defaults_and_validation() -> None:
    s = load(EmbedderSettings, {}, "brain.embedder")
    assert (s.threads, s.max_tokens, s.batch_size, s.quantize) == (1, 128, 1, "per_channel")
    assert s.model_path is None and s.tokenizer_path is None
    s = load(EmbedderSettings, {"model_path": "/m.onnx", "quantize": "none", "batch_size": 32},
             "brain.embedder")
    assert s.model_path == Path("/m.onnx") and s.quantize == "none"
    for table, key in (({"threads": 0}, "threads"), ({"max_tokens": 1}, "max_tokens"),
                       ({"max_tokens": 513}, "max_tokens"), ({"batch_size": 0}, "batch_size"),
                       ({"quantize": "int4"}, "quantize"), ({"model": "x"}, "model"),
                       ({"model_path": 5}, "model_path")):
        with pytest.raises(SettingError) as info:
            load(EmbedderSettings, table, "brain.embedder")
        assert info.value.key == f"brain.embedder.{key}"


def test_settings_import_loads_no_engine() -> None:
    """Reading settings must not load onnxruntime, tokenizers or faiss (shards read them too)."""
    code = ("import sys; import omega.brain.embedder, omega.index; "
            "heavy = [m for m in ('onnxruntime', 'tokenizers', 'faiss') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.stdout.strip() == ""
