"""The viewer profile: plain functions over plain data (no LMDB).

- the profile vector: a decayed sum of the viewed titles' stored embeddings,
  ``p ← w·e + decay·p`` (the j-th most recent view weighs decay**j; an abandoned
  view weighs ``abandoned_weight``): nothing is embedded on the hot path;
- dayparts of a timestamp, and the action → outcome counts per (daypart, genre)
  that give the viewer's genre affinity at this time of day;
- the value of a pattern (for the skill library's eviction rule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALL_DAY",
    "DAYPARTS",
    "Counts",
    "daypart",
    "event_daypart",
    "genre_affinity",
    "pattern_value",
    "update_profile",
    "view_weight",
]

F32 = npt.NDArray[np.float32]
DAYPARTS: tuple[str, ...] = ("night", "morning", "afternoon", "evening")
#: The counts key summing every daypart.
ALL_DAY = "*"
#: (daypart, genre) → (weighted successes, views); genre "" holds the daypart's totals.
Counts = Mapping[tuple[str, str], tuple[float, float]]


def daypart(timestamp: float, utc_offset_s: int = 0) -> str:
    """night 0-6 h, morning 6-12 h, afternoon 12-18 h, evening 18-24 h (local time)."""
    hour = int(((timestamp + utc_offset_s) % 86_400) // 3600)
    return DAYPARTS[hour // 6]


def event_daypart(timestamp: float, context: Mapping[str, str] | None, utc_offset_s: int) -> str:
    """The TV's own ``daypart`` label wins when it is one we know."""
    if context is not None and context.get("daypart") in DAYPARTS:
        return str(context["daypart"])
    return daypart(timestamp, utc_offset_s)


def view_weight(fraction: float, success_threshold: float, abandoned_weight: float) -> float:
    """A successful view counts 1, an abandoned one ``abandoned_weight``."""
    return 1.0 if fraction >= success_threshold else abandoned_weight


def update_profile(profile: F32, embedding: F32, weight: float, decay: float) -> F32:
    """One view more: the previous views each weigh ``decay`` times less."""
    return (decay * profile + weight * embedding).astype(np.float32)


def genre_affinity(
    counts: Counts, genres: Sequence[str], part: str, prior_views: float = 5.0
) -> F32:
    """Per genre, the share of the viewer's (success-weighted) views in ``part``.

    The daypart's share is shrunk toward the all-day share by ``prior_views``
    pseudo-views, so a daypart with few views falls back on the overall taste.
    Values are in [0, 1]; all zeros before the first view.
    """
    all_total = counts.get((ALL_DAY, ""), (0.0, 0.0))[0]
    out = np.zeros(len(genres), dtype=np.float32)
    if all_total <= 0:
        return out
    part_total = counts.get((part, ""), (0.0, 0.0))[0]
    for i, g in enumerate(genres):
        share_all = counts.get((ALL_DAY, g), (0.0, 0.0))[0] / all_total
        in_part = counts.get((part, g), (0.0, 0.0))[0]
        out[i] = (in_part + prior_views * share_all) / (part_total + prior_views)
    return np.clip(out, 0.0, 1.0)


def pattern_value(successes: float, samples: int) -> float:
    """What a pattern is worth keeping: smoothed success rate × log(1 + samples).

    A single abandoned view is worth least and goes first when the library is full.
    """
    return (successes + 1.0) / (samples + 2.0) * math.log1p(max(samples, 0))
