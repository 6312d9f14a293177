"""What a TV contributes: the co-view pairs due, within a daily budget, sealed.

``due_pairs`` takes the views not yet reported (with the ``window`` views before
them as context) and returns their windowed pairs, each weighted as the
recommender weighs its two views (a successful view 1, an abandoned one
``abandoned_weight``; docs/brain.md §4). ``Budget`` caps the real reports of a UTC
day. ``seal_reports`` randomizes each pair (``Randomizer``) and seals it to the
hub's key; ``fill`` pads a push with dummies to a constant count, so the number
and size of what a TV sends tell nothing about what it watched.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from omega.federation.report import HubKey, Randomizer, coview, seal, windowed_pairs

__all__ = ["Budget", "due_pairs", "fill", "seal_reports", "view_weight"]

DAY_S = 86_400


def view_weight(fraction: float, success_threshold: float, abandoned_weight: float) -> float:
    """A view's weight as the recommender gives it (docs/brain.md §4)."""
    return 1.0 if fraction >= success_threshold else abandoned_weight


def due_pairs(views: Sequence[tuple[str, float]], new: int, window: int
              ) -> list[tuple[str, str, float]]:
    """Pairs of the last ``new`` views with the ``window`` views before each.

    ``views``: oldest first, ``(content_id, view weight)``; the last ``new`` of them
    are not reported yet, the ones before are context only.
    """
    if new <= 0:
        return []
    return windowed_pairs(views, window, start=max(0, len(views) - new))


@dataclass(frozen=True)
class Budget:
    """Real reports used on a UTC day (``day`` = days since the epoch)."""

    day: int = 0
    used: int = 0

    def room(self, day: int, daily: int) -> int:
        return daily if day != self.day else max(0, daily - self.used)

    def spend(self, day: int, n: int) -> Budget:
        return Budget(day, (self.used if day == self.day else 0) + n)


def day_of(wall_s: float) -> int:
    return int(wall_s // DAY_S)


def choose(pairs: Sequence[tuple[str, str, float]], room: int) -> list[tuple[str, str, float]]:
    """The pairs that fit the day's room: the most recent ones (pairs are in view order)."""
    if room <= 0:
        return []
    return list(pairs[-room:])


def seal_reports(pairs: Sequence[tuple[str, str, float]], keys: Sequence[int],
                 randomizer: Randomizer, hub: HubKey, rng: random.Random) -> list[bytes]:
    """Randomize and seal one report per pair."""
    out = []
    for a, b, w in pairs:
        cv = randomizer.apply(coview(a, b, min(1.0, w)), keys, rng)
        out.append(seal(cv, hub))
    return out


def fill(real: Sequence[bytes], count: int, hub: HubKey, rng: random.Random) -> list[bytes]:
    """``real`` padded with sealed dummies to ``count`` reports, in random order."""
    if len(real) > count:
        raise ValueError(f"{len(real)} reports do not fit a push of {count}")
    out = list(real) + [seal(None, hub) for _ in range(count - len(real))]
    rng.shuffle(out)
    return out
