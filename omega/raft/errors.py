"""Errors of the replicated store, all under ``omega.errors.StoreError``.

What each ``submit`` failure says about the command's fate matters to the caller
(the shard answers a device and the device may retry):

- refused, never appended: ``NotLeader``, ``QueueFull``, ``CommandTooLarge``,
  ``StoreClosed`` (raised before the command was handed to Raft);
- definitely not applied: ``Discarded`` (another entry took its log index);
- outcome unknown, it may still be applied: ``LeaderChanged``, ``CommitTimeout``.
  Retry only idempotently (the shard de-duplicates by device and sequence);
- applied, but changed nothing: ``ApplyError`` (``apply`` raised; deterministic on
  every replica, the log index is consumed).

pysyncobj's exceptions and fail codes never leave ``omega.raft``.
"""

from __future__ import annotations

from omega.errors import ProtocolError, StoreError
from omega.protocol.errors import NotLeaderError, Unavailable

__all__ = [
    "ApplyError",
    "BadKey",
    "CommandTooLarge",
    "CommitTimeout",
    "Discarded",
    "LeaderChanged",
    "NotLeader",
    "PasswordRequired",
    "QueueFull",
    "RaftError",
    "SnapshotError",
    "StorageFailure",
    "StoreClosed",
    "StoreError",
    "UnknownDatabase",
    "wire_error",
]


class RaftError(StoreError):
    """Base of the errors raised by ``omega.raft``."""


class NotLeader(RaftError):
    """This replica is not the leader; nothing was appended.

    ``leader`` is the Raft address of the leader this replica knows, or ``None``
    during an election.
    """

    def __init__(self, leader: str | None) -> None:
        self.leader = leader
        where = f"the leader is {leader}" if leader else "no leader is known (election)"
        super().__init__(f"not the leader: {where}")


class LeaderChanged(RaftError):
    """Leadership changed before the command was confirmed; it may still be applied."""


class Discarded(LeaderChanged):
    """A new leader put another entry at this command's log index: it was not applied."""


class CommitTimeout(RaftError):
    """No outcome within the deadline; the command may still be applied later."""


class QueueFull(RaftError):
    """Raft's command queue is full (overload); nothing was appended, retry later."""


class CommandTooLarge(RaftError):
    """The command exceeds ``max_command_bytes``; nothing was appended."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"command of {size} bytes exceeds max_command_bytes={limit}")


class StoreClosed(RaftError):
    """The store was closed."""


class ApplyError(RaftError):
    """``apply`` raised on this command: its writes were rolled back on every replica.

    The log index is consumed (recorded as applied), so the replicas stay equal.
    """

    def __init__(self, index: int, kind: str, message: str) -> None:
        self.index = index
        self.kind = kind
        self.message = message
        super().__init__(f"apply failed at index {index}: {kind}: {message}")


class UnknownDatabase(RaftError, KeyError):
    """A named database that was not declared when the store was opened."""

    def __init__(self, db: str, known: tuple[str, ...]) -> None:
        self.db = db
        super().__init__(f"unknown database {db!r} (declared: {', '.join(known)})")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BadKey(RaftError, ValueError):
    """A key or value LMDB cannot store (empty key, key over 511 bytes, not bytes)."""


class StorageFailure(RaftError):
    """LMDB failed on this replica (map full, disk error): not a property of the command.

    The entry is not recorded as applied; this replica stops applying until the
    cause is fixed (e.g. a larger ``map_size``) and the node is restarted.
    """


class SnapshotError(RaftError):
    """A snapshot file is unreadable or not ours."""


class PasswordRequired(RaftError):
    """The Raft port would run without a password.

    PySyncObj's wire format is pickle: whoever can reach the port unauthenticated
    can run code on the node. Give the cluster password (``[secrets]`` of the node
    config), or, for a local run on a loopback address only, set
    ``raft.dev_mode = true``.
    """


def wire_error(exc: StoreError, what: str = "") -> ProtocolError:
    """A ``submit`` failure as the wire error its caller can act on, saying the
    command's fate: ``not_leader`` when it was certainly not applied (ask the leader),
    ``unavailable`` otherwise — "it may still be applied" when the outcome is unknown,
    so a retry must be idempotent."""
    doing = f"{what}: " if what else ""
    if isinstance(exc, NotLeader):
        return NotLeaderError(f"{doing}{exc}", leader=exc.leader)
    if isinstance(exc, Discarded):
        return NotLeaderError(f"{doing}leadership moved and it was not applied; ask the "
                              "new leader")
    if isinstance(exc, LeaderChanged | CommitTimeout):
        return Unavailable(f"{doing}{exc}; it may still be applied: check before asking "
                           "again", retry_after_s=1.0)
    return Unavailable(f"{doing}the store failed ({type(exc).__name__}: {exc}); retry",
                       retry_after_s=1.0)
