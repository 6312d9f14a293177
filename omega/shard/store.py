"""Build the replicated store with the shard's state machine (composition helper)."""

from __future__ import annotations

from pathlib import Path

from omega.raft import ReplicatedLmdb
from omega.shard.settings import ShardSettings
from omega.shard.state import DATABASES, apply


def open_store(settings: ShardSettings, data_dir: Path, password: bytes | None) -> ReplicatedLmdb:
    """``ReplicatedLmdb`` over ``data_dir`` applying ``omega.shard.state.apply``."""
    return ReplicatedLmdb(settings.raft, data_dir, password, apply, databases=DATABASES)
