"""The ONNX side of the embedder: sessions and the one-time re-quantization.

The only module that imports onnxruntime (docs/embedder-and-index.md has the
measurements behind every choice here).

The shipped all-MiniLM-L6-v2 file stores int8 weights as ``Cast → Mul(scale)``,
which onnxruntime folds back into float32 at load: ~150 MB of RSS and float32
matrix products. ``requantize`` turns it into a dynamically quantized model
(``MatMulInteger`` with per-channel int8 weights, onnxruntime's own
``quantize_dynamic``): 2-3× faster on one thread, ~40 MB of RSS for the session,
cosine 0.994 to the original vectors. It runs once, in a child process (its
peak is ~480 MB and the allocator would keep much of it in the brain), and the
result is kept in the cache directory under the source file's sha256.

Run as ``python -m omega.brain.onnx_model SRC DST`` (what ``ensure_requantized``
does).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from omega.brain.embedder import EmbedderError

__all__ = [
    "RECIPE",
    "EmbedderError",
    "OnnxSession",
    "cached_model_path",
    "ensure_requantized",
    "file_sha256",
    "requantize",
]

log = logging.getLogger("omega.brain")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Names the re-quantization recipe in the cache file name; bump it when the recipe changes.
RECIPE = "dq-pc-v1"
#: A re-quantization normally takes 3-10 s; this bounds a hung child.
REQUANTIZE_TIMEOUT_S = 600.0


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise EmbedderError(f"cannot read {path}: {exc}") from exc
    return h.hexdigest()


class OnnxSession:
    """An onnxruntime session of a BERT-style encoder, set up for a TV.

    Session options, measured (docs/embedder-and-index.md): one intra-op and one
    inter-op thread (two threads ran 2.2× slower on the shared 2-core machine),
    sequential execution, all graph optimizations, and no CPU memory arena, so
    memory taken by a large catalog batch goes back to the system afterwards.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbedderError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from exc
        inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        if missing:
            raise EmbedderError(f"{path} is not a BERT-style encoder: no input {sorted(missing)}")
        self._wants_types = "token_type_ids" in inputs
        self.path = path

    def run(self, ids: I64, mask: I64) -> F32:
        """Token ids and attention mask ``(batch, seq)`` → last hidden state ``(b, seq, h)``."""
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._wants_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            out = self._session.run(None, feeds)[0]
        except Exception as exc:
            raise EmbedderError(f"the model failed on a batch {ids.shape}: "
                                f"{_first_line(exc)}") from exc
        hidden = np.asarray(out, dtype=np.float32)
        if hidden.ndim != 3 or hidden.shape[:2] != ids.shape:
            raise EmbedderError(f"the model returned {hidden.shape}; expected (batch, seq, hidden)")
        return hidden


def requantize(source: Path, target: Path) -> None:
    """Write ``source`` re-quantized (dynamic, per-channel int8) to ``target``.

    Two steps, both onnxruntime's own: a basic-level graph optimization folds
    the stored ``Cast → Mul(scale)`` weights into plain float32 initializers,
    which ``quantize_dynamic`` can then quantize. Deterministic: the same source
    and onnxruntime version give the same bytes.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".requantize-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), sess_options=options,
                             providers=["CPUExecutionProvider"])
        quantize_dynamic(str(folded), str(target), per_channel=True,
                         weight_type=QuantType.QInt8)


def cached_model_path(cache_dir: Path, source: Path, source_sha256: str) -> Path:
    return cache_dir / f"{source.stem}-{source_sha256[:16]}-{RECIPE}.onnx"


def ensure_requantized(source: Path, source_sha256: str, cache_dir: Path,
                       timeout_s: float = REQUANTIZE_TIMEOUT_S) -> tuple[Path, bool]:
    """The cached re-quantized model, made now if missing. Returns (path, made_now).

    The child process writes a temporary file that is renamed into place, so a
    crash leaves no half-written model; two brains racing write the same bytes.
    """
    target = cached_model_path(cache_dir, source, source_sha256)
    if target.is_file():
        return target, False
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbedderError(f"cannot create the model cache {cache_dir}: {exc}") from exc
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    started = time.monotonic()
    log.info("re-quantizing the embedding model (once)", extra={"fields": {
        "source": str(source), "target": str(target)}})
    env = dict(os.environ)
    # The child must import this very package, wherever it is installed.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "omega.brain.onnx_model", str(source), str(tmp)],
            env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if proc.returncode != 0 or not tmp.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise EmbedderError(f"re-quantizing {source} failed (exit {proc.returncode}): "
                                + " | ".join(tail))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except subprocess.TimeoutExpired as exc:
        raise EmbedderError(f"re-quantizing {source} took over {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise EmbedderError(f"cannot write {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("re-quantized the embedding model", extra={"fields": {
        "target": str(target), "seconds": round(time.monotonic() - started, 2)}})
    return target, True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m omega.brain.onnx_model SOURCE TARGET", file=sys.stderr)
        return 2
    # quantize_dynamic logs advice on the root logger; only errors matter here.
    logging.basicConfig(level=logging.ERROR)
    requantize(Path(args[0]), Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
