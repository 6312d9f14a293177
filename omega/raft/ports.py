"""The state machine's seam: what ``apply`` reads and writes through.

``KvReader``/``KvWriter`` are implemented by LMDB transactions (``omega.raft.kv``)
and by a dict (``omega.raft.memkv.MemoryKv``, for unit tests of an ``apply``).
Keys and values are bytes; databases are names declared when the store opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MAX_KEY_BYTES", "ApplyFailed", "ApplyFn", "KvReader", "KvWriter"]

#: LMDB's default key size limit.
MAX_KEY_BYTES = 511


class KvReader(Protocol):
    """A consistent read-only view of the named databases."""

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value under ``key``, or ``None``."""
        ...

    def iterate(
        self, db: str, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs whose key starts with ``prefix``, in key order.

        ``start`` (inclusive) resumes a scan. The iterator is valid only while its
        view is (inside ``read()``, or during ``apply``); do not write to ``db``
        while iterating it: collect first.
        """
        ...


class KvWriter(KvReader, Protocol):
    """The view ``apply`` gets: reads see its own writes."""

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete(self, db: str, key: bytes) -> bool:
        """Remove ``key``; whether it existed."""
        ...


#: ``apply(kv, command, index) -> result``: pure and deterministic (reads nothing
#: but its arguments: no clock, randomness, settings or I/O). Runs on every replica
#: in log order inside the LMDB transaction that records ``index`` as applied. The
#: result goes back to ``submit`` on the replica that submitted (not replicated).
ApplyFn = Callable[[KvWriter, bytes, int], Any]


@dataclass(frozen=True)
class ApplyFailed:
    """What an entry "returns" when ``apply`` raised (its writes were rolled back)."""

    index: int
    kind: str
    message: str
