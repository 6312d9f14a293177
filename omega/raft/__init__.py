"""Raft-replicated LMDB: a deterministic state machine on every shard replica.

``ReplicatedLmdb(settings, data_dir, password, apply)``: ``submit(command,
timeout_s)`` on the leader returns ``apply``'s result once the entry is committed
and applied there; ``read()`` gives a read-only view on any replica. See
docs/raft.md for the apply contract, exactly-once application and snapshots.
"""

from omega.raft.errors import (
    ApplyError,
    BadKey,
    CommandTooLarge,
    CommitTimeout,
    Discarded,
    LeaderChanged,
    NotLeader,
    PasswordRequired,
    QueueFull,
    RaftError,
    SnapshotError,
    StorageFailure,
    StoreClosed,
    UnknownDatabase,
    wire_error,
)
from omega.raft.memkv import MemoryKv
from omega.raft.node import ReplicatedLmdb
from omega.raft.ports import ApplyFn, KvReader, KvWriter
from omega.raft.settings import RaftSettings

__all__ = [
    "ApplyError",
    "ApplyFn",
    "BadKey",
    "CommandTooLarge",
    "CommitTimeout",
    "Discarded",
    "KvReader",
    "KvWriter",
    "LeaderChanged",
    "MemoryKv",
    "NotLeader",
    "PasswordRequired",
    "QueueFull",
    "RaftError",
    "RaftSettings",
    "ReplicatedLmdb",
    "SnapshotError",
    "StorageFailure",
    "StoreClosed",
    "UnknownDatabase",
    "wire_error",
]
