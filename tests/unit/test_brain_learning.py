"""What one view teaches the brain (omega.brain.learning), and planning a catalog
update (omega.brain.catalog_update): plain functions, no LMDB, no actors."""

from __future__ import annotations

import numpy as np
import pytest

from omega.brain.catalog import Catalog, text_hash
from omega.brain.catalog_update import given_vectors, plan_update, plan_writes
from omega.brain.content import Content, ViewingEvent, content_text
from omega.brain.errors import InvalidContent, InvalidEvent, OutOfOrderEvent, UnknownContent
from omega.brain.learning import (
    check_view,
    count_updates,
    coview_pairs,
    learn,
    normalized,
    profile_stats_after,
    seen_after,
)
from omega.brain.memory import CatalogRecord
from omega.brain.profile import ALL_DAY
from omega.brain.settings import BrainSettings

S = BrainSettings()


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_count_updates_touch_each_genre_and_all_views_in_the_daypart_and_all_day() -> None:
    counts = {("evening", "drama"): (1.0, 2.0)}
    out = count_updates(counts, "evening", ["drama", "crime"], 0.5)
    assert out == {
        ("evening", ""): (0.5, 1.0),
        (ALL_DAY, ""): (0.5, 1.0),
        ("evening", "drama"): (1.5, 3.0),
        (ALL_DAY, "drama"): (0.5, 1.0),
        ("evening", "crime"): (0.5, 1.0),
        (ALL_DAY, "crime"): (0.5, 1.0),
    }
    assert counts == {("evening", "drama"): (1.0, 2.0)}  # the input is not changed


def test_a_repeated_genre_counts_once_per_occurrence() -> None:
    out = count_updates({}, "morning", ["a", "a"], 1.0)
    assert out[("morning", "a")] == (2.0, 2.0)


def test_profile_stats_and_seen_count_views_and_successes() -> None:
    assert profile_stats_after({}, True) == {"views": 1.0, "successes": 1.0}
    assert profile_stats_after({"views": 3.0, "successes": 1.0}, False) == {
        "views": 4.0, "successes": 1.0}
    assert seen_after(None, False, 10.0, 0.2) == (1, 0.0, 10.0, 0.2)
    assert seen_after((1, 0.0, 10.0, 0.2), True, 20.0, 0.9) == (2, 1.0, 20.0, 0.9)


def test_learn_keys_a_first_view_by_the_title_and_later_ones_by_the_profile() -> None:
    emb = unit(1, 0, 0)
    first = learn(profile=np.zeros(3, np.float32), stats={}, counts={}, seen=None,
                  embedding=emb, genre_keys=["drama"], fraction=0.95, timestamp=5.0,
                  daypart="evening", settings=S)
    assert first.success
    np.testing.assert_allclose(first.key, emb)
    assert np.linalg.norm(first.profile) > 0
    second = learn(profile=first.profile * 7, stats=first.stats, counts=first.counts,
                   seen=first.seen, embedding=unit(0, 1, 0), genre_keys=[], fraction=0.1,
                   timestamp=6.0, daypart="evening", settings=S)
    assert not second.success
    np.testing.assert_allclose(second.key, normalized(first.profile * 7), rtol=1e-6)
    assert second.stats == {"views": 2.0, "successes": 1.0}
    assert second.seen == (2, 1.0, 6.0, 0.1)


def test_normalized_keeps_zero_and_scales_to_unit() -> None:
    np.testing.assert_array_equal(normalized(np.zeros(2, np.float32)), np.zeros(2))
    assert abs(float(np.linalg.norm(normalized(np.asarray([3, 4], np.float32)))) - 1) < 1e-6


def test_coview_pairs_are_distinct_sorted_and_unordered() -> None:
    assert coview_pairs(["c", "a", "b", "a"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert coview_pairs(["only"]) == []


def test_check_view_refuses_unknown_bad_and_late_views() -> None:
    pos = {"m1": 4}
    assert check_view(ViewingEvent("m1", 0.5, 100), pos, None, 60) == (4, 100.0)
    assert check_view(ViewingEvent("m1", 0.5, 100), pos, 150.0, 60) == (4, 100.0)
    with pytest.raises(UnknownContent):
        check_view(ViewingEvent("nope", 0.5, 100), pos, None, 60)
    with pytest.raises(OutOfOrderEvent):
        check_view(ViewingEvent("m1", 0.5, 100), pos, 161.0, 60)
    with pytest.raises(InvalidEvent):
        check_view(ViewingEvent("m1", 1.5, 100), pos, None, 60)


def _catalog(*items: Content) -> Catalog:
    cat = Catalog(3)
    recs = [(CatalogRecord(i, c.id, c.title, tuple(c.genres), c.description, c.year,
                           c.duration_min, dict(c.metadata), text_hash(content_text(c))),
             unit(1, i + 1, 0)) for i, c in enumerate(items)]
    cat.upsert(recs)
    return cat


def test_plan_update_skips_identical_items_and_embeds_only_changed_text() -> None:
    heat = Content(id="m1", title="Heat (1995)", genres=("Crime",))
    cat = _catalog(heat)
    plan = plan_update(cat, [heat, Content(id="m2", title="Ronin"),
                             Content(id="m1", title="Heat (1995)", genres=("Crime",),
                                     metadata={"rating": "R"})], 10)
    # m1 changed metadata only (same text): written, not re-embedded; m2 is new.
    assert [r.content_id for r in plan.records] == ["m1", "m2"]
    assert [plan.records[i].content_id for i in plan.changed] == ["m2"]
    assert plan.records[1].idx == 1 and plan.next_idx == 2 and plan.unchanged == 0
    embedded: list[list[str]] = []
    writes = plan_writes(plan, cat, {}, lambda texts: (embedded.append(texts),
                                                        np.tile(unit(0, 0, 1), (len(texts), 1)))[1])
    assert embedded == [[plan.texts[1]]]
    np.testing.assert_allclose(writes[0][1], cat.embeddings[0])  # kept, not re-embedded
    np.testing.assert_allclose(writes[1][1], unit(0, 0, 1))
    assert plan_update(cat, [heat], 10).unchanged == 1


def test_plan_update_refuses_a_whole_call_with_one_bad_item_or_too_many_titles() -> None:
    cat = _catalog(Content(id="m1", title="Heat"))
    with pytest.raises(InvalidContent):
        plan_update(cat, [Content(id="m2", title="ok"), "not content"], 10)  # type: ignore[list-item]
    with pytest.raises(InvalidContent, match="max_catalog_items"):
        plan_update(cat, [Content(id="m2", title="a"), Content(id="m3", title="b")], 2)


def test_given_vectors_are_checked_and_normalized() -> None:
    out = given_vectors({"m1": [0.0, 3.0, 4.0]}, 3)
    np.testing.assert_allclose(out["m1"], [0, 0.6, 0.8], rtol=1e-6)
    for bad in ([0.0, 0.0, 0.0], [1.0, 2.0], [np.nan, 1.0, 1.0]):
        with pytest.raises(InvalidContent):
            given_vectors({"m1": bad}, 3)
