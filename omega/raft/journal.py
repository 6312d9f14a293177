"""``DurableJournal``: PySyncObj's file journal, on disk before anything leaves the replica.

PySyncObj appends entries to an mmapped file and never syncs it, and stores the
current term and vote with a rename but no fsync: a process crash loses nothing
(the page cache survives it), but a power loss of a majority at once could lose
entries the group had acknowledged, and a replica could vote twice in a term.

Raft's rule is that an entry, a term and a vote are durable before any message
that depends on them is sent. This wrapper marks the journal dirty on every
change; the replica calls :meth:`sync` before each outgoing message (the
transport's ``send``) and before applying an entry (so a one-replica group is
covered too). One sync then covers every entry a message carries or
acknowledges: a follower receiving ten entries syncs once before its reply, and
the leader once per batch before sending it. A term or vote change is synced at
once (file and directory), as PySyncObj stores it synchronously anyway.

Thread-safety: none needed; PySyncObj's tick thread is the only caller.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omega.raft.fsync import fsync_path

__all__ = ["DurableJournal"]


class DurableJournal:
    """Stands in for PySyncObj's ``FileJournal`` (same methods), adding :meth:`sync`."""

    def __init__(self, inner: Any, journal_path: Path) -> None:
        self._inner = inner
        self._meta_path = Path(f"{journal_path}.meta")
        self._dir = journal_path.parent
        # Entries may have been added before this wrapper was installed.
        self._dirty = True
        self.syncs = 0
        self.sync_seconds = 0.0
        self.max_sync_seconds = 0.0
        fsync_path(self._dir)  # the journal file's own directory entry

    # -- what PySyncObj changes: marked dirty ------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._inner.add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        self._inner.clear()
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # PySyncObj's names, as is
        self._inner.deleteEntriesFrom(entryFrom)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._inner.deleteEntriesTo(entryTo)
        self._dirty = True

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # PySyncObj writes the term and vote to a temporary file and renames it,
        # before it sends the vote or a message in the new term: make that durable.
        self._inner.setCurrentTerm(term, votedForNodeId)
        if self._meta_path.exists():
            started = time.perf_counter()
            fsync_path(self._meta_path)
            fsync_path(self._dir)
            self._count(time.perf_counter() - started)

    # -- the rest, as is -----------------------------------------------------------------

    def __getitem__(self, item: Any) -> Any:
        return self._inner[item]

    def __len__(self) -> int:
        return len(self._inner)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Saved with the meta once a second; a lost commit index is learned again
        # from the leader, so it needs no sync of its own.
        self._inner.setRaftCommitIndex(raftCommitIndex)

    def getRaftCommitIndex(self) -> int:
        return int(self._inner.getRaftCommitIndex())

    def getCurrentTerm(self) -> int:
        return int(self._inner.getCurrentTerm())

    def getVotedForNodeId(self) -> Any:
        return self._inner.getVotedForNodeId()

    def onOneSecondTimer(self) -> None:
        self._inner.onOneSecondTimer()

    def flush(self) -> None:
        self.sync()

    def _destroy(self) -> None:
        self._inner._destroy()

    # -- durability ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """For ``status()``: syncs made, their total time and the slowest."""
        return {"fsync": True, "syncs": self.syncs, "sync_seconds": round(self.sync_seconds, 3),
                "max_sync_ms": round(self.max_sync_seconds * 1000, 2)}

    @property
    def dirty(self) -> bool:
        """Changed since the last :meth:`sync`."""
        return self._dirty

    def sync(self) -> None:
        """msync the journal if it changed (a no-op otherwise)."""
        if not self._dirty:
            return
        started = time.perf_counter()
        flush = getattr(self._inner, "flush", None)
        if flush is not None:  # a MemoryJournal has nothing to sync
            flush()
        self._dirty = False
        self._count(time.perf_counter() - started)

    def _count(self, seconds: float) -> None:
        self.syncs += 1
        self.sync_seconds += seconds
        if seconds > self.max_sync_seconds:
            self.max_sync_seconds = seconds
