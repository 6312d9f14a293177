"""``one_blas_thread``: numpy's BLAS on one thread, set before numpy loads.

The brain's matrix-vector products are tiny; a second OpenBLAS thread does not
speed them up, and it spins after each call: on a busy 2-core box a product went
from 0.35 ms to 8 ms, and in a benchmark loop the spinning thread took 4-5 ms from
whatever was timed next (docs/embedder-and-index.md, docs/benchmarks.md). This
module imports nothing heavy, so callers can use it before numpy is imported.
"""

from __future__ import annotations

import os

__all__ = ["one_blas_thread"]

_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Ask every BLAS numpy may load for one thread; an operator's setting wins."""
    for var in _VARS:
        os.environ.setdefault(var, "1")
