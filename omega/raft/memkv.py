"""The in-memory twin of the LMDB views, for unit tests of an ``apply`` function.

Same rules as ``LmdbView``: declared databases only, bytes keys of 1..511 bytes,
bytes values, iteration in key order. ``state_hash`` matches ``LmdbStore``'s for
equal contents, so an ``apply`` can be checked against the real store.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from omega.raft.digest import state_hash
from omega.raft.errors import BadKey, UnknownDatabase
from omega.raft.ports import MAX_KEY_BYTES, ApplyFailed, KvWriter

__all__ = ["MemoryKv"]


class MemoryKv:
    """``KvWriter`` over dicts (sorted key lists kept beside them for iteration)."""

    def __init__(self, databases: Sequence[str] = ("main",)) -> None:
        self._data: dict[str, dict[bytes, bytes]] = {name: {} for name in databases}
        self._keys: dict[str, list[bytes]] = {name: [] for name in databases}
        self.applied_index = 0

    def apply_entry(self, index: int, command: bytes,
                    apply: Callable[[KvWriter, bytes, int], Any]) -> Any:
        """``LmdbStore.apply_entry`` in memory: skip replays, roll back a raising apply.

        Returns ``None`` for a replayed index (LMDB returns its ``SKIPPED`` marker).
        """
        if index <= self.applied_index:
            return None
        saved = ({k: dict(v) for k, v in self._data.items()},
                 {k: list(v) for k, v in self._keys.items()})
        try:
            result = apply(self, command, index)
        except Exception as exc:
            self._data, self._keys = saved
            result = ApplyFailed(index, type(exc).__name__, str(exc))
        self.applied_index = index
        return result

    def _db(self, db: str) -> dict[bytes, bytes]:
        try:
            return self._data[db]
        except KeyError:
            raise UnknownDatabase(db, tuple(self._data)) from None

    def get(self, db: str, key: bytes) -> bytes | None:
        _check_key(key)
        return self._db(db).get(key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        _check_key(key)
        if not isinstance(value, bytes):
            raise BadKey(f"value must be bytes, got {type(value).__name__}")
        data = self._db(db)
        if key not in data:
            bisect.insort(self._keys[db], key)
        data[key] = value

    def delete(self, db: str, key: bytes) -> bool:
        _check_key(key)
        data = self._db(db)
        if key not in data:
            return False
        del data[key]
        keys = self._keys[db]
        del keys[bisect.bisect_left(keys, key)]
        return True

    def iterate(
        self, db: str, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        if not isinstance(prefix, bytes):
            raise BadKey("prefix must be bytes")
        if start is not None:
            _check_key(start)
        data = self._db(db)
        keys = list(self._keys[db])  # a snapshot: the caller may write afterwards
        first = prefix if start is None or start < prefix else start
        return self._iterate(data, keys, bisect.bisect_left(keys, first), prefix)

    @staticmethod
    def _iterate(data: dict[bytes, bytes], keys: list[bytes], i: int,
                 prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in keys[i:]:
            if not key.startswith(prefix):
                return
            yield key, data[key]

    def state_hash(self) -> str:
        return state_hash((name, self.iterate(name)) for name in sorted(self._data))


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise BadKey(f"key must be bytes, got {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        raise BadKey(f"key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}")
