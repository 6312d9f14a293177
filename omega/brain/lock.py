"""``DirLock``: one brain per data directory, enforced with ``flock``.

The lock file (``brain.lock``) lives in the directory it guards; the kernel drops
the lock when the process dies, so a crashed brain never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from omega.brain.errors import DataDirError, DataDirLocked

__all__ = ["DirLock"]


class DirLock:
    """An exclusive, non-blocking lock on a data directory (created 0700 if absent)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> DirLock:
        """Raises ``DataDirError`` if the directory is unusable, ``DataDirLocked`` if taken."""
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path / "brain.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(str(path), f"cannot use the data directory: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise DataDirLocked(str(path), "another brain has this data directory open") from exc
        return cls(fd)

    def release(self) -> None:
        """Idempotent."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
