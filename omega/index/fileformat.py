"""The index file format: one ``.npz`` with a sha256 over its arrays.

Written to a temporary file, fsynced and renamed (a reader never sees half a
file); on load the checksum, the format version, the kind and the ledger (ids,
values, ages) are checked before anything is built from it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from omega.index.errors import IndexFileError
from omega.index.interface import F64, I64

__all__ = ["FORMAT_VERSION", "NORM_TOLERANCE", "check_ledger", "check_unit_rows", "checksum",
           "read_index_file", "write_index_file"]

FORMAT_VERSION = 1
#: Saved vectors must be this close to unit length.
NORM_TOLERANCE = 1e-3


def write_index_file(target: Path, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    """Write ``arrays`` plus their checksum to ``target`` atomically (tmp, fsync, rename)."""
    arrays["checksum"] = checksum(arrays)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise IndexFileError(str(target), f"cannot write: {exc}") from exc


def checksum(arrays: Mapping[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_index_file(where: str) -> dict[str, np.ndarray[Any, Any]]:
    try:
        # Our own handle: np.load leaks its file when it fails on a path.
        with open(where, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise IndexFileError(where, "no such file") from None
    # NotImplementedError: zipfile's answer to a damaged "compression method" field.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError,
            NotImplementedError) as exc:
        raise IndexFileError(where, f"unreadable: {exc}") from None
    except AttributeError:  # np.load returned a plain array: not an .npz
        raise IndexFileError(where, "not an index file") from None
    stored = arrays.get("checksum")
    if stored is None or not np.array_equal(stored, checksum(arrays)):
        raise IndexFileError(where, "checksum mismatch: the file is damaged or not an index")
    return arrays


def check_ledger(arrays: Mapping[str, np.ndarray[Any, Any]],
                  kind: str) -> tuple[I64, I64, F64, I64]:
    for name in ("format", "kind", "header", "ids", "values", "seqs"):
        if name not in arrays:
            raise ValueError(f"missing array {name!r}")
    fmt = arrays["format"]
    if fmt.shape != (1,) or int(fmt[0]) != FORMAT_VERSION:
        raise ValueError(f"format {fmt.tolist()}, this code reads [{FORMAT_VERSION}]")
    if arrays["kind"].shape != (1,) or str(arrays["kind"][0]) != kind:
        raise ValueError(f"file holds a {arrays['kind'].tolist()} index, not {kind!r}")
    header = arrays["header"]
    if header.shape != (3,) or header.dtype != np.int64:
        raise ValueError("bad header")
    dim, capacity, next_seq = (int(x) for x in header)
    if dim < 1 or capacity < 1 or next_seq < 0:
        raise ValueError(f"bad header {header.tolist()}")
    ids, values, seqs = arrays["ids"], arrays["values"], arrays["seqs"]
    n = int(ids.shape[0]) if ids.ndim == 1 else -1
    if (ids.dtype != np.int64 or values.dtype != np.float64 or seqs.dtype != np.int64
            or n < 0 or values.shape != (n,) or seqs.shape != (n,)):
        raise ValueError("ids, values and seqs must be aligned int64/float64/int64 arrays")
    if n > capacity:
        raise ValueError(f"{n} entries for capacity {capacity}")
    if n:
        if int(ids.min()) < 0 or np.unique(ids).size != n:
            raise ValueError("ids must be unique and >= 0")
        if not np.isfinite(values).all():
            raise ValueError("values must be finite")
        if int(seqs.min()) < 0 or int(seqs.max()) >= next_seq or np.unique(seqs).size != n:
            raise ValueError("sequence numbers must be unique and below the header's")
    return header, ids, values, seqs


def check_unit_rows(vectors: np.ndarray[Any, Any], dim: int) -> None:
    """Raise ValueError unless ``vectors`` is finite float32 (or float16, as an HNSW
    graph may store them) ``(n, dim)`` with unit rows."""
    if (vectors.ndim != 2 or vectors.shape[1] != dim
            or vectors.dtype not in (np.float32, np.float16)):
        raise ValueError(f"vectors must be float32 (n, {dim}), got {vectors.dtype} "
                         f"{vectors.shape}")
    step = 4096  # in chunks: a large catalog should not double its memory here
    for start in range(0, vectors.shape[0], step):
        chunk = vectors[start:start + step].astype(np.float64)
        if not np.isfinite(chunk).all():
            raise ValueError("vectors hold NaN or infinity")
        norms = np.linalg.norm(chunk, axis=1)
        if norms.size and float(np.abs(norms - 1.0).max()) > NORM_TOLERANCE:
            raise ValueError("vectors are not unit length")
