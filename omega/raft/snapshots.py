"""Log-compaction snapshots of the LMDB state, behind PySyncObj's serializer hooks.

PySyncObj's own snapshot pickles the SyncObj's attributes, which do not include
LMDB: a follower that installed one lost the data. Here the snapshot IS the data:
a compacted LMDB copy made under one read transaction at Raft's last applied index
(no fork: a forked child must not touch an open LMDB environment).

The copy runs on a thread so the Raft thread keeps heartbeating. PySyncObj renames
``<dump>.tmp`` over ``<dump>`` as soon as ``serialize`` returns, so ``serialize``
puts a hard link to the current dump there (renaming a file onto another link of
itself does nothing) or, before the first snapshot, a placeholder; ``check``
renames the finished copy over the dump, and only then does PySyncObj truncate its
journal. A placeholder is only ever seen with an untruncated journal, so it is
safe to delete it at start-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from omega.raft.errors import SnapshotError
from omega.raft.kv import LmdbStore, RaftEntry, SnapshotCopy, read_snapshot_meta

__all__ = ["PLACEHOLDER", "CheckState", "Snapshotter"]

log = logging.getLogger("omega.raft")

PLACEHOLDER = b"omega-raft: snapshot being written\n"

CheckState = Literal["idle", "running", "success", "failed"]


def _entry(raw: Any) -> RaftEntry:
    command, index, term = raw
    return (bytes(command), int(index), int(term))


def _addresses(cluster: Iterable[Any]) -> list[str]:
    return sorted(str(getattr(node, "id", node)) for node in cluster)


def _is_placeholder(path: Path) -> bool:
    try:
        if path.stat().st_size != len(PLACEHOLDER):
            return False
        return path.read_bytes() == PLACEHOLDER
    except FileNotFoundError:
        return False


class Snapshotter:
    """Makes, finishes and installs snapshots for one replica (Raft thread calls)."""

    def __init__(self, store: LmdbStore, dump_path: Path,
                 wall: Callable[[], float] = time.time) -> None:
        self._store = store
        self._dump = dump_path
        self._build = dump_path.with_name(dump_path.name + ".build")
        self._tmp = dump_path.with_name(dump_path.name + ".tmp")  # PySyncObj's name
        self._wall = wall
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._copy: SnapshotCopy | None = None
        self._error: BaseException | None = None
        self._cancelled = False
        self._start_failed = False
        self._started = 0.0
        self.made = 0
        self.installed = 0
        self.failed = 0
        #: {"kind": "made" | "installed", "index": int, "time": wall seconds, "bytes": int}
        self.last: dict[str, Any] | None = None

    def prepare_start(self) -> None:
        """Before PySyncObj starts: drop leftovers, refuse a damaged dump."""
        for leftover in (self._build, self._tmp,
                         self._dump.with_name(self._dump.name + ".1.tmp")):
            leftover.unlink(missing_ok=True)
        if _is_placeholder(self._dump):
            self._dump.unlink()
        if self._dump.exists():
            try:
                read_snapshot_meta(self._dump)
            except SnapshotError as exc:
                raise SnapshotError(
                    f"{exc}. The journal was truncated at that snapshot, so this replica "
                    f"cannot rebuild from its own files: move its data directory aside and "
                    f"restart it; it will receive a snapshot from the leader") from exc

    # -- PySyncObj hooks (Raft thread) -------------------------------------------------

    def serialize(self, tmp_name: str, raft_data: Any) -> None:
        """``SyncObjConf.serializer``: start a snapshot at Raft's last applied entry.

        Never raises: PySyncObj would then stop serving snapshots until a later
        ``check`` reports an outcome, so a failure is reported by ``check``.
        """
        try:
            self._start(Path(tmp_name), raft_data)
        except Exception as exc:
            log.error("cannot start a snapshot", extra={"fields": {"error": repr(exc)}})
            with self._lock:
                self._start_failed = True

    def _start(self, tmp: Path, raft_data: Any) -> None:
        last, prev, cluster = raft_data
        with self._lock:
            if self._thread is not None:
                raise SnapshotError("a snapshot is already being written")
            tmp.unlink(missing_ok=True)
            if self._dump.exists():
                os.link(self._dump, tmp)
            else:
                tmp.write_bytes(PLACEHOLDER)
            copy = self._store.begin_snapshot(_entry(last)[1], _entry(last), _entry(prev),
                                              _addresses(cluster))
            self._copy, self._error, self._cancelled = copy, None, False
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._write, args=(copy,),
                                            name="omega-raft-snapshot", daemon=True)
            self._thread.start()

    def _write(self, copy: SnapshotCopy) -> None:
        try:
            copy.write(self._build)
        except BaseException as exc:  # reported through check(); the thread must not die loudly
            self._error = exc

    def check(self) -> CheckState:
        """``SyncObjConf.serializeChecker``: finish a written snapshot."""
        with self._lock:
            if self._start_failed:
                self._start_failed = False
                self._abandon()
                return "failed"
            thread = self._thread
            if thread is None:
                return "idle"
            if thread.is_alive():
                return "running"
            self._thread = None
            copy, self._copy = self._copy, None
            if self._cancelled or self._error is not None:
                self._abandon()
                if self._error is not None:
                    log.error("snapshot failed", extra={"fields": {"error": repr(self._error)}})
                return "failed"
            assert copy is not None
            size = self._build.stat().st_size
            os.replace(self._build, self._dump)
            fd = os.open(self._dump.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._tmp.unlink(missing_ok=True)
            self.made += 1
            self.last = {"kind": "made", "index": copy.index, "time": self._wall(),
                         "bytes": size}
            log.info("snapshot made", extra={"fields": {
                "index": copy.index, "bytes": size,
                "seconds": round(time.monotonic() - self._started, 3)}})
            return "success"

    def deserialize(self, name: str) -> tuple[RaftEntry, RaftEntry, tuple[str, ...]]:
        """``SyncObjConf.deserializer``: load a dump at start-up or install a received one.

        The LMDB state is replaced only if the snapshot is ahead of it: at start-up
        the local state is normally at or past its own dump.
        """
        path = Path(name)
        self.cancel_and_wait()
        meta = read_snapshot_meta(path)
        if self._store.install(path):
            self.installed += 1
            self.last = {"kind": "installed", "index": meta.applied_index,
                         "time": self._wall(), "bytes": path.stat().st_size}
            log.info("snapshot installed", extra={"fields": {"index": meta.applied_index}})
        return meta.last, meta.prev, meta.cluster

    # -- any thread --------------------------------------------------------------------

    def cancel_and_wait(self) -> None:
        """Let a snapshot being written finish and mark it for discarding."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._cancelled = True
        thread.join()

    def _abandon(self) -> None:
        self.failed += 1
        self._build.unlink(missing_ok=True)
        self._tmp.unlink(missing_ok=True)
        if _is_placeholder(self._dump):
            self._dump.unlink()
