"""``ViewerMemory``: what the brain keeps in RAM about its viewer.

The profile vector and its counts, the recent views, every watched title and the
genre counters by daypart. LMDB holds the truth; this is loaded at open and
follows each committed view (``apply_view``), never ahead of the commit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from omega.brain.catalog import Catalog
from omega.brain.errors import BadInput
from omega.brain.learning import Counts, Seen, ViewUpdate
from omega.brain.memory import Memory

__all__ = ["ViewerMemory"]

F32 = npt.NDArray[np.float32]


@dataclass
class ViewerMemory:
    dim: int
    history_length: int
    profile: F32 = field(init=False)
    profile_stats: dict[str, float] = field(init=False)
    #: (catalog position, watch fraction, timestamp), newest first.
    recent: deque[tuple[int, float, float]] = field(init=False)
    seen: dict[str, Seen] = field(init=False)
    #: Watched titles by catalog position.
    watched: npt.NDArray[np.bool_] = field(init=False)
    counts: Counts = field(init=False)

    def __post_init__(self) -> None:
        self.profile = np.zeros(self.dim, dtype=np.float32)
        self.profile_stats = {"views": 0.0, "successes": 0.0}
        self.recent = deque(maxlen=self.history_length)
        self.seen = {}
        self.watched = np.zeros(0, dtype=bool)
        self.counts = {}

    def load(self, mem: Memory, catalog: Catalog) -> None:
        vec, stats = mem.load_profile()
        if vec is not None and vec.size == self.dim:
            self.profile = vec
        self.profile_stats.update(stats)
        self.seen = mem.load_seen()
        self.counts = mem.load_counts()
        for ep in reversed(mem.recent_episodes(self.history_length)):
            pos = catalog.position.get(ep.content_id)
            if pos is not None:
                self.recent.appendleft((pos, ep.watch_fraction, ep.timestamp))
        self.refresh_watched(catalog)

    def refresh_watched(self, catalog: Catalog) -> None:
        """Recompute the watched mask (the catalog grew or was reloaded)."""
        mask = np.zeros(len(catalog), dtype=bool)
        for cid in self.seen:
            pos = catalog.position.get(cid)
            if pos is not None:
                mask[pos] = True
        self.watched = mask

    def apply_view(self, content_id: str, pos: int, fraction: float, ts: float,
                   update: ViewUpdate) -> None:
        """A view is committed: the RAM state follows."""
        self.profile = update.profile
        self.profile_stats = update.stats
        self.counts.update(update.counts)
        self.seen[content_id] = update.seen
        self.watched[pos] = True
        self.recent.appendleft((pos, fraction, ts))

    def recent_titles(self, max_titles: int) -> list[str]:
        """The most recently watched distinct titles, newest first."""
        if isinstance(max_titles, bool) or not isinstance(max_titles, int) \
                or not 1 <= max_titles <= 10_000:
            raise BadInput(f"max_titles must be an integer in [1, 10000], got {max_titles!r}")
        order = sorted(self.seen.items(), key=lambda kv: -kv[1][2])
        return [cid for cid, _ in order[:max_titles]]
