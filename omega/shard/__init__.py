"""The shard role: device-facing sync service over a Raft-replicated LMDB.

``ShardService`` handles Push / Pull / Heartbeat / Health frames; ``ShardSettings``
is the ``[shard]`` config table; ``open_store`` builds the replicated store with
the shard's state machine. See docs/shard.md.
"""

from __future__ import annotations

from omega.shard.errors import UnknownDevice
from omega.shard.service import ShardService, ShardStore
from omega.shard.settings import ShardSettings
from omega.shard.state import DATABASES, ReportBatch, apply
from omega.shard.store import open_store

__all__ = [
    "DATABASES",
    "ReportBatch",
    "ShardService",
    "ShardSettings",
    "ShardStore",
    "UnknownDevice",
    "apply",
    "open_store",
]
