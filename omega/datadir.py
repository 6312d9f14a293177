"""Data at rest: a node's files are its owner's alone.

The TV's LMDB holds its viewers' history and a shard's holds device state; the
control socket can stop the node. So a node runs with umask 077, its data
directories are 0700 and its files 0600, and a directory left by an older build
(created under the usual umask 022) is tightened when the node starts.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "UMASK", "owner_only_umask", "prepare", "tighten"]

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077


def owner_only_umask() -> int:
    """Make every file this process creates owner-only; returns the previous umask."""
    return os.umask(UMASK)


def prepare(path: Path) -> bool:
    """Create ``path`` (mode 0700, parents as needed) or tighten the tree already there.

    Returns True when the directory did not exist (the caller may remove it again
    if the start fails, so that a failed start leaves nothing behind).
    """
    created = not path.exists()
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tighten(path)
    return created


def tighten(root: Path) -> None:
    """Directories under ``root`` to 0700, files and sockets to 0600 (symlinks untouched)."""
    _chmod(root, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            _chmod(Path(dirpath, name), DIR_MODE)
        for name in filenames:
            _chmod(Path(dirpath, name), FILE_MODE)


def _chmod(path: Path, mode: int) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return  # not ours to change (a link's target, another user's file)
    if stat.S_IMODE(st.st_mode) != mode:
        path.chmod(mode)
