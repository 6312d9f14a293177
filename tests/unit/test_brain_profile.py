"""Profile functions (omega.brain.profile) and the skill library (omega.brain.patterns)."""

from __future__ import annotations

import numpy as np
import pytest

from omega.brain.memory import PatternRecord
from omega.brain.patterns import SkillLibrary, consolidate
from omega.brain.profile import (
    ALL_DAY,
    daypart,
    event_daypart,
    genre_affinity,
    pattern_value,
    update_profile,
    view_weight,
)
from omega.index import BruteForceIndex, create_index

DAY = 1_700_006_400  # 2023-11-15 00:00 UTC


@pytest.mark.parametrize(("hour", "part"), [(0, "night"), (5, "night"), (6, "morning"),
                                            (13, "afternoon"), (18, "evening"), (23, "evening")])
def test_daypart_of_a_timestamp(hour: int, part: str) -> None:
    assert daypart(DAY + hour * 3600) == part


def test_daypart_uses_the_tv_offset_and_its_own_label() -> None:
    assert daypart(DAY + 20 * 3600, utc_offset_s=6 * 3600) == "night"  # 02:00 local
    assert event_daypart(DAY, {"daypart": "evening"}, 0) == "evening"
    assert event_daypart(DAY, {"daypart": "teatime"}, 0) == "night"  # unknown label ignored


def test_profile_update_decays_the_past() -> None:
    p = np.zeros(2, np.float32)
    p = update_profile(p, np.asarray([1, 0], np.float32), 1.0, 0.5)
    p = update_profile(p, np.asarray([0, 1], np.float32), 1.0, 0.5)
    np.testing.assert_allclose(p, [0.5, 1.0])
    assert view_weight(0.95, 0.8, 0.3) == 1.0
    assert view_weight(0.5, 0.8, 0.3) == 0.3


def test_genre_affinity_shrinks_a_thin_daypart_toward_the_whole_day() -> None:
    counts = {
        (ALL_DAY, ""): (10.0, 10.0), (ALL_DAY, "crime"): (8.0, 8.0),
        (ALL_DAY, "comedy"): (2.0, 2.0),
        ("morning", ""): (2.0, 2.0), ("morning", "comedy"): (2.0, 2.0),
    }
    aff = genre_affinity(counts, ["crime", "comedy", "horror"], "morning", prior_views=2.0)
    # morning: comedy (2 + 2*0.2)/(2+2) = 0.6, crime (0 + 2*0.8)/4 = 0.4, horror 0
    np.testing.assert_allclose(aff, [0.4, 0.6, 0.0], rtol=1e-6)
    evening = genre_affinity(counts, ["crime", "comedy"], "evening", prior_views=2.0)
    np.testing.assert_allclose(evening, [0.8, 0.2], rtol=1e-6)
    assert not genre_affinity({}, ["crime"], "evening").any()


def test_pattern_value_prefers_many_successes() -> None:
    assert pattern_value(0, 1) < pattern_value(1, 1) < pattern_value(5, 5) < pattern_value(50, 50)
    assert pattern_value(0, 0) == 0.0


def _key(*xs: float) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_a_view_updates_the_close_pattern_of_the_same_title_else_creates_one() -> None:
    lib = SkillLibrary(BruteForceIndex(dim=8, capacity=10), merge_threshold=0.9)
    first = lib.observe(_key(1, 0), "heat", True, 1.0)
    assert [r.pid for r in first.put] == [1] and first.next_pid == 2
    again = lib.observe(_key(1, 0.1), "heat", False, 2.0)  # cosine 0.995: same pattern
    assert [(r.pid, r.successes, r.samples) for r in again.put] == [(1, 1.0, 2)]
    other_title = lib.observe(_key(1, 0), "casino", True, 3.0)
    far_key = lib.observe(_key(0, 1), "heat", True, 4.0)
    assert [r.pid for r in other_title.put] == [2] and [r.pid for r in far_key.put] == [3]
    assert len(lib) == 3
    near = lib.nearest(_key(1, 0), 2)
    assert {r.content_id for _, r in near} == {"heat", "casino"}


def test_a_full_library_evicts_the_least_valuable_pattern() -> None:
    lib = SkillLibrary(create_index("hnsw", 8, 2), merge_threshold=0.99)
    lib.observe(_key(1, 0), "a", True, 1.0)
    lib.observe(_key(1, 0), "a", True, 2.0)  # a: 2 successes in 2 samples
    lib.observe(_key(0, 1), "b", False, 3.0)  # b: abandoned once
    change = lib.observe(_key(0, 0, 1), "c", True, 4.0)
    assert change.delete == (2,)
    assert sorted(r.content_id for r in lib.entries.values()) == ["a", "c"]
    # A newcomer worth less than everything kept is evicted at once and not stored.
    lib2 = SkillLibrary(BruteForceIndex(dim=8, capacity=1), merge_threshold=0.99)
    lib2.observe(_key(1, 0), "a", True, 1.0)
    lost = lib2.observe(_key(0, 1), "b", False, 2.0)
    assert lost.put == () and lost.delete == (2,)
    assert list(lib2.entries) == [1]


def test_consolidate_clusters_patterns_by_key() -> None:
    recs = [PatternRecord(1, "a", 1, 1, 0, _key(1, 0)),
            PatternRecord(2, "b", 1, 2, 0, _key(1, 0.1)),
            PatternRecord(3, "c", 0, 1, 0, _key(0, 1))]
    clusters = consolidate(recs, threshold=0.9)
    assert sorted(c["size"] for c in clusters) == [1, 2]
    big = next(c for c in clusters if c["size"] == 2)
    assert big["contents"] == {"a": [1.0, 1.0], "b": [1.0, 2.0]}
    assert consolidate([]) == []
    capped = consolidate(recs, threshold=0.999, max_clusters=1)
    assert len(capped) == 1 and capped[0]["size"] == 3
