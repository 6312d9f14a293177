"""Bulk pattern import, the view history and the status report: maintenance jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.brain.catalog import Catalog
from omega.brain.content import ViewingEvent
from omega.brain.errors import BadInput, UnknownContent
from omega.brain.learning import normalized
from omega.brain.memory import Memory, PatternRecord
from omega.brain.patterns import SkillLibrary

__all__ = ["PatternRow", "history", "load_patterns", "status_report"]

F32 = npt.NDArray[np.float32]
#: (key, content id, successes, samples, last time)
PatternRow = tuple[F32, str, float, int, float]


def load_patterns(lib: SkillLibrary, memory: Memory, catalog: Catalog, dim: int,
                  patterns: Sequence[PatternRow]) -> int:
    """Check every row, add them to the library and write them in one transaction.

    Returns the next pattern id. ``UnknownContent`` / ``BadInput`` before any change.
    """
    recs: list[PatternRecord] = []
    pid = lib.next_pid
    for key, cid, succ, samples, ts in patterns:
        if cid not in catalog:
            raise UnknownContent(cid)
        vec = normalized(np.asarray(key, dtype=np.float32).reshape(-1))
        if vec.size != dim or not np.isfinite(vec).all():
            raise BadInput(f"pattern key must be {dim} finite floats")
        recs.append(PatternRecord(pid, cid, float(succ), int(samples), float(ts), vec))
        pid += 1
    before = set(lib.entries)
    lib.load(recs)
    kept = [r for r in recs if r.pid in lib.entries]
    memory.write_patterns(kept, pid, sorted(before - set(lib.entries)))
    lib.next_pid = pid
    return pid


def history(memory: Memory, limit: int) -> list[ViewingEvent]:
    """The last ``limit`` stored views, newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
        raise BadInput(f"limit must be an integer in [1, 1000000], got {limit!r}")
    return [ViewingEvent(e.content_id, e.watch_fraction, e.timestamp, e.context)
            for e in memory.recent_episodes(limit)]


def status_report(memory: Memory, **fields: Any) -> dict[str, Any]:
    """``fields`` plus the LMDB counts and sizes (``omega-node tv status``)."""
    stats = memory.stats()
    e = stats["entries"]
    return {**fields, "episodes": e["episodes"], "watched_titles": e["seen"],
            "consolidated": e["consolidated"], "lmdb_used_bytes": stats["used_bytes"],
            "lmdb_map_size": stats["map_size"]}
