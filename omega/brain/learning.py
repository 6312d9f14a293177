"""What one view teaches the brain: plain functions over plain data.

``observe`` computes its new state with these, writes it in one LMDB transaction,
and only then lets its RAM state follow. Tested in tests/unit/test_brain_learning.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from omega.brain.content import ViewingEvent, check_event
from omega.brain.errors import OutOfOrderEvent, UnknownContent
from omega.brain.profile import ALL_DAY, update_profile, view_weight
from omega.brain.settings import BrainSettings

__all__ = ["Counts", "Seen", "ViewUpdate", "check_view", "count_updates", "coview_pairs", "learn",
           "normalized",
           "profile_stats_after", "seen_after"]

F32 = npt.NDArray[np.float32]
#: (daypart, genre key) → (weighted successes, views); genre "" counts every view.
Counts = dict[tuple[str, str], tuple[float, float]]
#: Per title: (views, successes, last timestamp, last watch fraction).
Seen = tuple[int, float, float, float]


def check_view(event: ViewingEvent, position: Mapping[str, int], last_ts: float | None,
               tolerance_s: float) -> tuple[int, float]:
    """The viewed title's catalog position and the view's time, or a ``BadInput``
    (``InvalidEvent``, ``UnknownContent``, ``OutOfOrderEvent``)."""
    check_event(event)
    pos = position.get(event.content_id)
    if pos is None:
        raise UnknownContent(event.content_id)
    ts = float(event.timestamp)
    if last_ts is not None and ts < float(last_ts) - tolerance_s:
        raise OutOfOrderEvent(ts, float(last_ts), tolerance_s)
    return pos, ts


def normalized(v: F32) -> F32:
    """``v`` scaled to unit length (a zero vector stays zero)."""
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v


def count_updates(counts: Mapping[tuple[str, str], tuple[float, float]], daypart: str,
                  genre_keys: Iterable[str], weight: float) -> Counts:
    """The counters one view changes: each of the title's genres and "" (all views),
    in its daypart and in ``ALL_DAY``; successes grow by the view's ``weight``."""
    out: Counts = {}
    for genre in ["", *genre_keys]:
        for part in (daypart, ALL_DAY):
            succ, views = out.get((part, genre)) or counts.get((part, genre), (0.0, 0.0))
            out[(part, genre)] = (succ + weight, views + 1.0)
    return out


def coview_pairs(titles: Iterable[str]) -> list[tuple[str, str]]:
    """Every unordered pair ``(a, b)``, ``a < b``, of distinct titles, sorted."""
    ordered = sorted(set(titles))
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]


def profile_stats_after(stats: Mapping[str, float], success: bool) -> dict[str, float]:
    """The profile's view and success counts after one more view."""
    return {"views": stats.get("views", 0.0) + 1,
            "successes": stats.get("successes", 0.0) + float(success)}


def seen_after(seen: Seen | None, success: bool, timestamp: float, fraction: float) -> Seen:
    """A title's record after one more view of it."""
    views, successes, _, _ = seen if seen is not None else (0, 0.0, 0.0, 0.0)
    return (views + 1, successes + float(success), timestamp, fraction)


@dataclass(frozen=True)
class ViewUpdate:
    """Everything one view changes, computed before anything is written."""

    success: bool
    #: The skill library's key for this view: the profile before it (unit), or the
    #: title's own vector for a first view.
    key: F32
    profile: F32
    stats: dict[str, float]
    counts: Counts
    seen: Seen


def learn(*, profile: F32, stats: Mapping[str, float], counts: Counts, seen: Seen | None,
          embedding: F32, genre_keys: Iterable[str], fraction: float, timestamp: float,
          daypart: str, settings: BrainSettings) -> ViewUpdate:
    """What watching ``fraction`` of a title (its ``embedding`` and genres) teaches."""
    s = settings
    success = fraction >= s.success_threshold
    weight = view_weight(fraction, s.success_threshold, s.abandoned_weight)
    return ViewUpdate(
        success=success,
        key=normalized(profile) if np.any(profile) else embedding.copy(),
        profile=update_profile(profile, embedding, weight, s.content_decay),
        stats=profile_stats_after(stats, success),
        counts=count_updates(counts, daypart, genre_keys, weight),
        seen=seen_after(seen, success, timestamp, fraction),
    )
