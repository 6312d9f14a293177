"""LMDB under the replicated state machine (the only shard-side module importing lmdb).

One single-file environment (``state.mdb``) holds the application's named
databases and a meta database with the applied Raft index. ``apply_entry`` runs
``apply`` in a child transaction of the transaction that records the index, so an
entry's effects and "entry applied" commit together or not at all.

A snapshot is a compacted copy of that file (``copyfd(compact=True)`` under one
read transaction) whose meta database also holds the two Raft entries and the
cluster PySyncObj needs to restart from it. Installing one copies it beside the
live file and swaps it in with one ``rename`` (atomic: a crash leaves the old or
the new state, each with its own applied index).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from omega.raft.digest import state_hash
from omega.raft.errors import (
    BadKey,
    RaftError,
    SnapshotError,
    StorageFailure,
    StoreClosed,
    UnknownDatabase,
)
from omega.raft.fsync import fsync_path
from omega.raft.ports import MAX_KEY_BYTES, ApplyFailed, KvWriter

__all__ = [
    "SKIPPED",
    "LmdbStore",
    "LmdbView",
    "RaftEntry",
    "SnapshotCopy",
    "SnapshotMeta",
    "read_snapshot_meta",
]

log = logging.getLogger("omega.raft")

#: PySyncObj's log entry: (command, index, term).
RaftEntry = tuple[bytes, int, int]

META_DB = b"__omega_raft__"
FORMAT = b"omega-raft-state/1"
K_FORMAT = b"format"
K_APPLIED = b"applied_index"
K_SNAP_LAST = b"snapshot_last_entry"
K_SNAP_PREV = b"snapshot_prev_entry"
K_SNAP_CLUSTER = b"snapshot_cluster"

_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">QQ")


class _Skipped:
    """Result of an entry at or below the stored applied index (replayed, not applied)."""

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Any = _Skipped()


def _encode_entry(entry: RaftEntry) -> bytes:
    command, index, term = entry
    return _ENTRY_HEAD.pack(index, term) + bytes(command)


def _decode_entry(raw: bytes) -> RaftEntry:
    index, term = _ENTRY_HEAD.unpack_from(raw)
    return (bytes(raw[_ENTRY_HEAD.size:]), index, term)


class _Gate:
    """Shared/exclusive access to the environment object (readers vs. swap/close)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    def acquire_shared(self, timeout_s: float) -> None:
        with self._cond:
            # Fast path (every read, every push): no swap or close waiting.
            if self._exclusive and not self._cond.wait_for(lambda: not self._exclusive,
                                                           timeout_s):
                raise RaftError("the store is being swapped or closed; try again")
            self._shared += 1

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            # Only a swap or close waits for the readers to drain: wake it at zero.
            if self._exclusive and self._shared == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, timeout_s: float) -> Iterator[None]:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._exclusive, timeout_s):
                raise RaftError("the store is busy")
            self._exclusive = True  # new readers wait from here
            if not self._cond.wait_for(lambda: self._shared == 0, timeout_s):
                self._exclusive = False
                self._cond.notify_all()
                raise RaftError(f"{self._shared} reader(s) held the store for {timeout_s} s")
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class LmdbView:
    """``KvReader``/``KvWriter`` over one LMDB transaction."""

    def __init__(self, txn: Any, dbs: dict[str, Any], *, write: bool) -> None:
        self._txn: Any = txn
        self._dbs = dbs
        self._write = write
        #: Set when LMDB itself failed under this view (not the caller's fault).
        self.storage_error: StorageFailure | None = None

    def close(self) -> None:
        self._txn = None

    def _db(self, db: str) -> Any:
        try:
            return self._dbs[db]
        except KeyError:
            raise UnknownDatabase(db, tuple(self._dbs)) from None

    def _live(self) -> Any:
        if self._txn is None:
            raise StoreClosed("this view's transaction has ended")
        return self._txn

    def _failed(self, exc: lmdb.Error) -> StorageFailure:
        if isinstance(exc, lmdb.MapFullError):
            failure = StorageFailure("LMDB map is full: raise raft.map_size and restart")
        else:
            failure = StorageFailure(f"LMDB: {type(exc).__name__}: {exc}")
        self.storage_error = failure
        return failure

    # get/put/delete run several times per push on every replica: the key, database
    # and transaction checks are inlined (same rules and errors as _check_key, _db,
    # _live), which halves their cost against the helper calls.

    def get(self, db: str, key: bytes) -> bytes | None:
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY_BYTES:
            _check_key(key)
        handle = self._dbs.get(db)
        if handle is None:
            self._db(db)
        txn = self._txn
        if txn is None:
            raise StoreClosed("this view's transaction has ended")
        try:
            value = txn.get(key, db=handle)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc
        return value if value is None or type(value) is bytes else bytes(value)

    def iterate(
        self, db: str, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        if not isinstance(prefix, bytes):
            raise BadKey("prefix must be bytes")
        if start is not None:
            _check_key(start)
        handle = self._db(db)
        txn = self._live()
        return self._iterate(txn, handle, prefix, start)

    def _iterate(
        self, txn: Any, handle: Any, prefix: bytes, start: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            cursor = txn.cursor(db=handle)
            first = prefix if start is None or start < prefix else start
            if not cursor.set_range(first):
                return
            for key, value in cursor:
                if not key.startswith(prefix):
                    return
                yield bytes(key), bytes(value)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def put(self, db: str, key: bytes, value: bytes) -> None:
        if not self._write:
            self._require_write()
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY_BYTES:
            _check_key(key)
        if not isinstance(value, bytes):
            raise BadKey(f"value must be bytes, got {type(value).__name__}")
        handle = self._dbs.get(db)
        if handle is None:
            self._db(db)
        txn = self._txn
        if txn is None:
            raise StoreClosed("this view's transaction has ended")
        try:
            txn.put(key, value, db=handle)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def delete(self, db: str, key: bytes) -> bool:
        if not self._write:
            self._require_write()
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY_BYTES:
            _check_key(key)
        handle = self._dbs.get(db)
        if handle is None:
            self._db(db)
        txn = self._txn
        if txn is None:
            raise StoreClosed("this view's transaction has ended")
        try:
            return bool(txn.delete(key, db=handle))
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def _require_write(self) -> None:
        if not self._write:
            raise RaftError("read-only view: only apply() writes, through submit()")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise BadKey(f"key must be bytes, got {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        raise BadKey(f"key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}")


@dataclass(frozen=True)
class SnapshotMeta:
    """What a snapshot file says about itself."""

    applied_index: int
    last: RaftEntry
    prev: RaftEntry
    cluster: tuple[str, ...]


def read_snapshot_meta(path: Path) -> SnapshotMeta:
    """Read a snapshot file's meta (opens it read-only; never modifies it)."""
    try:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=2,
                        create=False)
    except lmdb.Error as exc:
        raise SnapshotError(f"{path}: not an LMDB snapshot: {exc}") from exc
    try:
        try:
            meta = env.open_db(META_DB, create=False)
        except lmdb.Error as exc:
            raise SnapshotError(f"{path}: no raft meta database: {exc}") from exc
        with env.begin(db=meta) as txn:
            fmt, applied = txn.get(K_FORMAT), txn.get(K_APPLIED)
            last, prev = txn.get(K_SNAP_LAST), txn.get(K_SNAP_PREV)
            cluster = txn.get(K_SNAP_CLUSTER)
        if fmt != FORMAT or None in (applied, last, prev, cluster):
            raise SnapshotError(f"{path}: not an omega raft snapshot (format {fmt!r})")
        assert applied is not None and last is not None and prev is not None
        assert cluster is not None
        return SnapshotMeta(
            applied_index=_U64.unpack(applied)[0],
            last=_decode_entry(last),
            prev=_decode_entry(prev),
            cluster=tuple(a for a in bytes(cluster).decode().split("\n") if a),
        )
    finally:
        env.close()


class SnapshotCopy:
    """A consistent copy in progress: a read transaction pinned at the snapshot point.

    Made on the Raft thread by ``LmdbStore.begin_snapshot``; ``write`` runs on any
    thread (LMDB's copy releases the GIL), then releases the pin.
    """

    def __init__(self, env: Any, txn: Any, release: Callable[[], None], index: int) -> None:
        self._env = env
        self._txn: Any = txn
        self._release = release
        self.index = index

    def write(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                self._env.copyfd(fd, compact=True, txn=self._txn)
                os.fsync(fd)
            finally:
                os.close(fd)
        except (lmdb.Error, OSError) as exc:
            raise SnapshotError(f"copying the state to {path} failed: {exc}") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            self._release()


def read_everything(path: Path, databases: Sequence[str]) -> tuple[int, str, int]:
    """Read every record of a closed store: ``(applied index, state hash, records)``.

    For ``omega.raft.integrity``'s child process: touches every page reachable
    from the meta pages (LMDB checks each header). Raises ``lmdb.Error`` (or dies
    by a signal) on a damaged file.
    """
    names = sorted(databases)
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False,
                    max_dbs=len(names) + 1, readahead=True)
    try:
        with env.begin() as txn:
            meta = env.open_db(META_DB, txn=txn, create=False)
            raw = txn.get(K_APPLIED, db=meta)
            applied = 0 if raw is None else int(_U64.unpack(raw)[0])
            counted = [sum(1 for _ in txn.cursor(db=meta))]

            def items(db: Any) -> Iterator[tuple[bytes, bytes]]:
                for kv in txn.cursor(db=db):
                    counted[0] += 1
                    yield kv

            digest = state_hash((n, items(env.open_db(n.encode(), txn=txn, create=False)))
                                for n in names)
    finally:
        env.close()
    return applied, digest, counted[0]


class LmdbStore:
    """The replica's LMDB state: apply, read, hash, snapshot, install."""

    def __init__(self, path: Path, databases: Sequence[str], *, map_size: int,
                 fsync: bool, gate_timeout_s: float = 30.0) -> None:
        names = tuple(databases)
        if not names or len(set(names)) != len(names):
            raise RaftError("databases must be distinct names, at least one")
        for name in names:
            if not name or name.encode() == META_DB:
                raise RaftError(f"bad database name {name!r}")
        self.path = path
        self.databases = names
        self._map_size = map_size
        self._fsync = fsync
        self._gate = _Gate()
        self._gate_timeout_s = gate_timeout_s
        self._env: Any = None
        self._dbs: dict[str, Any] = {}
        self._meta: Any = None
        #: Entries skipped because their index was already applied (replays).
        self.skipped = 0
        self._open()

    # -- lifecycle -------------------------------------------------------------------

    def _open(self) -> None:
        try:
            env = lmdb.open(str(self.path), subdir=False, map_size=self._map_size,
                            max_dbs=len(self.databases) + 1, sync=self._fsync,
                            metasync=self._fsync, max_readers=512, readahead=False,
                            mode=0o600)  # py-lmdb's default 0o755 marks data executable
        except lmdb.Error as exc:
            raise StorageFailure(f"{self.path}: cannot open LMDB: {exc}") from exc
        try:
            with env.begin(write=True) as txn:
                meta = env.open_db(META_DB, txn=txn, create=True)
                dbs = {n: env.open_db(n.encode(), txn=txn, create=True) for n in self.databases}
                fmt = txn.get(K_FORMAT, db=meta)
                if fmt is None:
                    txn.put(K_FORMAT, FORMAT, db=meta)
                elif fmt != FORMAT:
                    raise StorageFailure(f"{self.path}: format {bytes(fmt)!r}, expected {FORMAT!r}")
        except lmdb.Error as exc:
            env.close()
            raise StorageFailure(f"{self.path}: cannot initialise LMDB: {exc}") from exc
        except BaseException:
            env.close()
            raise
        self._env, self._meta, self._dbs = env, meta, dbs

    def close(self) -> None:
        if self._env is None:
            return
        with self._gate.exclusive(self._gate_timeout_s):
            with contextlib.suppress(lmdb.Error):
                self._env.sync(True)
            self._env.close()
            self._env = None

    def _require_open(self) -> Any:
        if self._env is None:
            raise StoreClosed("the store is closed")
        return self._env

    def sync(self) -> None:
        """Flush LMDB to disk (any thread; periodically, when commits are not fsynced)."""
        self._gate.acquire_shared(self._gate_timeout_s)
        try:
            env = self._require_open()
            env.sync(True)
        except lmdb.Error as exc:
            raise StorageFailure(f"LMDB sync failed: {exc}") from exc
        finally:
            self._gate.release_shared()

    # -- the Raft thread's side ------------------------------------------------------

    def applied_index(self) -> int:
        env = self._require_open()
        with env.begin(db=self._meta) as txn:
            raw = txn.get(K_APPLIED)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def apply_entry(self, index: int, command: bytes,
                    apply: Callable[[KvWriter, bytes, int], Any]) -> Any:
        """Apply one committed entry exactly once (Raft thread only).

        Returns ``apply``'s result, ``SKIPPED`` if ``index`` was applied before
        (a replay after restart or snapshot), or ``ApplyFailed`` if ``apply``
        raised (its writes are rolled back, the index is still recorded). Raises
        ``StorageFailure`` if LMDB fails: then nothing is recorded.
        """
        env = self._require_open()
        committed = False
        try:
            txn = env.begin(write=True)
        except lmdb.Error as exc:
            raise StorageFailure(f"LMDB: cannot begin a write: {exc}") from exc
        try:
            raw = txn.get(K_APPLIED, db=self._meta)
            if raw is not None and index <= _U64.unpack(raw)[0]:
                self.skipped += 1
                return SKIPPED
            result = self._run_apply(env, txn, index, command, apply)
            txn.put(K_APPLIED, _U64.pack(index), db=self._meta)
            txn.commit()
            committed = True
            return result
        except lmdb.Error as exc:
            raise StorageFailure(f"LMDB failed applying index {index}: {exc}") from exc
        finally:
            if not committed:
                txn.abort()

    def _run_apply(self, env: Any, txn: Any, index: int, command: bytes,
                   apply: Callable[[KvWriter, bytes, int], Any]) -> Any:
        child = env.begin(write=True, parent=txn)
        view = LmdbView(child, self._dbs, write=True)
        try:
            result = apply(view, command, index)
        except Exception as exc:  # apply's own failure: deterministic on every replica
            child.abort()
            if view.storage_error is not None:
                raise StorageFailure(f"LMDB failed under apply at index {index}: "
                                     f"{view.storage_error}") from exc
            log.warning("apply failed; entry recorded as applied with no effect",
                        extra={"fields": {"index": index, "error": repr(exc)}})
            return ApplyFailed(index, type(exc).__name__, str(exc))
        finally:
            view.close()
        if view.storage_error is not None:  # apply swallowed an LMDB failure
            child.abort()
            raise StorageFailure(f"LMDB failed under apply at index {index}: "
                                 f"{view.storage_error}")
        child.commit()
        return result

    def begin_snapshot(self, index: int, last: RaftEntry, prev: RaftEntry,
                       cluster: Sequence[str]) -> SnapshotCopy:
        """Pin the state at ``index`` (= Raft's last applied; Raft thread only).

        Records ``index`` as applied (entries after the last ``apply``, if any,
        were Raft no-ops) and the Raft metadata, then pins a read transaction.
        """
        env = self._require_open()
        try:
            with env.begin(write=True, db=self._meta) as txn:
                raw = txn.get(K_APPLIED)
                applied = 0 if raw is None else _U64.unpack(raw)[0]
                if applied > index:
                    raise SnapshotError(f"state is at index {applied}, past the snapshot "
                                        f"point {index}")
                txn.put(K_APPLIED, _U64.pack(index))
                txn.put(K_SNAP_LAST, _encode_entry(last))
                txn.put(K_SNAP_PREV, _encode_entry(prev))
                txn.put(K_SNAP_CLUSTER, "\n".join(sorted(cluster)).encode())
        except lmdb.Error as exc:
            raise StorageFailure(f"LMDB failed marking a snapshot: {exc}") from exc
        self._gate.acquire_shared(self._gate_timeout_s)
        try:
            rtxn = env.begin()
        except BaseException:
            self._gate.release_shared()
            raise
        return SnapshotCopy(env, rtxn, self._gate.release_shared, index)

    def install(self, snapshot: Path) -> bool:
        """Replace the state with ``snapshot`` if it is ahead of ours (Raft thread only).

        Returns whether it was installed. The snapshot file is copied, never moved
        (PySyncObj keeps serving and restarting from it).
        """
        meta = read_snapshot_meta(snapshot)
        if meta.applied_index <= self.applied_index():
            return False
        incoming = self.path.with_name(self.path.name + ".incoming")
        try:
            shutil.copyfile(snapshot, incoming)
            os.chmod(incoming, 0o600)  # whatever the umask: it becomes state.mdb
            fsync_path(incoming)
        except OSError as exc:
            raise SnapshotError(f"cannot stage snapshot {snapshot}: {exc}") from exc
        with self._gate.exclusive(self._gate_timeout_s):
            self._env.close()
            self._env = None
            try:
                os.replace(incoming, self.path)
                fsync_path(self.path.parent)
            except OSError as exc:
                raise SnapshotError(f"cannot swap in snapshot {snapshot}: {exc}") from exc
            finally:
                self._open()  # the new state, or the old one if the swap failed
        got = self.applied_index()
        if got != meta.applied_index:
            raise SnapshotError(f"installed snapshot reads applied index {got}, "
                                f"expected {meta.applied_index}")
        return True

    # -- any thread ------------------------------------------------------------------

    def reader(self) -> _Reader:
        """A consistent read-only view (one LMDB read transaction), as a context manager."""
        return _Reader(self)

    def state_hash(self) -> tuple[int, str]:
        """(applied index, hash over the application databases), from one read txn."""
        with self.reader() as view:
            txn = view._live()
            raw = txn.get(K_APPLIED, db=self._meta)
            applied = 0 if raw is None else int(_U64.unpack(raw)[0])
            digest = state_hash((name, view.iterate(name)) for name in sorted(self.databases))
        return applied, digest


class _Reader:
    """``LmdbStore.reader()``: a plain context manager (a generator-based one costs
    several µs more, and every push and pull opens one)."""

    __slots__ = ("_store", "_txn", "_view")

    def __init__(self, store: LmdbStore) -> None:
        self._store = store
        self._txn: Any = None
        self._view: LmdbView | None = None

    def __enter__(self) -> LmdbView:
        store = self._store
        store._gate.acquire_shared(store._gate_timeout_s)
        try:
            env = store._require_open()
            self._txn = env.begin()
        except BaseException:
            store._gate.release_shared()
            raise
        self._view = LmdbView(self._txn, store._dbs, write=False)
        return self._view

    def __exit__(self, *exc: object) -> None:
        try:
            if self._view is not None:
                self._view.close()
            if self._txn is not None:
                self._txn.abort()
        finally:
            self._view = self._txn = None
            self._store._gate.release_shared()
