"""The ranking functions of omega.brain.recommender, on small hand-made arrays."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from omega.brain import recommender as rk
from omega.brain.settings import RecommenderSettings

PLAIN = RecommenderSettings(crowd=1.0, content=1.0, popularity=0.0, trend=0.0, context=0.0,
                            genre_cap=0, mmr_lambda=1.0)


def unit(*rows: list[float]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def signals(n: int, **given: np.ndarray) -> rk.Signals:
    zero = np.zeros(n, dtype=np.float32)
    fields = {f: np.asarray(given.get(f, zero), dtype=np.float32)
              for f in ("crowd", "content", "popularity", "trend", "context")}
    return rk.Signals(**fields)


def test_view_weights_decay_by_recency_and_discount_abandoned_views() -> None:
    w = rk.view_weights([0.95, 0.95, 0.3, 1.0], decay=0.9, success_threshold=0.8,
                        abandoned_weight=0.5)
    np.testing.assert_allclose(w, [1.0, 0.9, 0.81 * 0.5, 0.729], rtol=1e-6)


def test_profile_vector_is_the_normalized_weighted_mean() -> None:
    emb = unit([1, 0], [0, 1])
    p = rk.profile_vector(emb, np.asarray([3.0, 1.0], np.float32))
    np.testing.assert_allclose(p, np.asarray([3, 1]) / np.sqrt(10), rtol=1e-6)
    assert not rk.profile_vector(emb[:0], np.zeros(0, np.float32)).any()


def test_crowd_scores_sum_weighted_neighbour_lists_and_name_the_biggest_contributor() -> None:
    neighbours = {
        0: (np.asarray([2, 3], np.int64), np.asarray([0.5, 0.1], np.float32)),
        1: (np.asarray([3], np.int64), np.asarray([0.9], np.float32)),
    }
    # History, most recent first: item 0 (weight 1), then item 1 (weight 0.5).
    scores, anchor = rk.crowd_scores([0, 1], np.asarray([1.0, 0.5], np.float32), neighbours, 5)
    np.testing.assert_allclose(scores, [0, 0, 0.5, 0.1 + 0.45, 0], rtol=1e-6)
    assert anchor.tolist() == [-1, -1, 0, 1, -1]


def test_crowd_scores_ignore_history_without_lists() -> None:
    scores, anchor = rk.crowd_scores([7], np.ones(1, np.float32), {}, 10)
    assert not scores.any() and (anchor == -1).all()


def test_scale_popularity_is_log_scaled_to_one() -> None:
    p = rk.scale_popularity([0, 9, 99])
    assert p[2] == pytest.approx(1.0) and p[0] == 0.0
    assert 0.45 < p[1] < 0.55  # log(10)/log(100)
    assert not rk.scale_popularity([0, 0]).any()


def test_item_context_scores_average_genre_affinity_per_item() -> None:
    # item 0: genres {0, 1}; item 1: none; item 2: {2}
    ptr = np.asarray([0, 2, 2, 3], np.int64)
    ids = np.asarray([0, 1, 2], np.int64)
    out = rk.item_context_scores(np.asarray([0.2, 0.6, 1.0], np.float32), ptr, ids)
    np.testing.assert_allclose(out, [0.4, 0.0, 1.0], rtol=1e-6)


def test_rank_removes_watched_and_orders_by_blended_score() -> None:
    cand = np.arange(4, dtype=np.int64)
    sig = signals(4, content=np.asarray([0.9, 0.8, 0.1, 0.5]))
    out = rk.rank(cand, sig, PLAIN, 3, exclude=np.asarray([True, False, False, False]))
    assert [r.item for r in out] == [1, 3, 2]
    assert all(r.source == "similar" for r in out)
    assert out[0].score == pytest.approx(0.8)


def test_crowd_signal_is_scaled_to_its_maximum() -> None:
    cand = np.arange(3, dtype=np.int64)
    sig = signals(3, crowd=np.asarray([10.0, 5.0, 0.0]), content=np.asarray([0.0, 0.0, 0.7]))
    out = rk.rank(cand, sig, PLAIN, 3)
    assert [(r.item, r.source) for r in out] == [(0, "crowd"), (2, "similar"), (1, "crowd")]
    assert out[0].score == pytest.approx(1.0)


def test_weights_decide_which_signal_wins() -> None:
    cand = np.arange(2, dtype=np.int64)
    sig = signals(2, popularity=np.asarray([1.0, 0.0]), trend=np.asarray([0.0, 1.0]))
    pop_first = rk.rank(cand, sig, replace(PLAIN, popularity=1.0, trend=0.5), 2)
    trend_first = rk.rank(cand, sig, replace(PLAIN, popularity=0.5, trend=1.0), 2)
    assert [r.source for r in pop_first] == ["popular", "trending"]
    assert [r.item for r in trend_first] == [1, 0]


def test_no_signal_at_all_falls_back_to_newest_titles() -> None:
    cand = np.arange(5, dtype=np.int64)
    out = rk.rank(cand, signals(5), PLAIN, 2)
    assert [r.item for r in out] == [4, 3]
    assert {r.source for r in out} == {"new"}


def test_genre_cap_limits_one_genre_and_fills_from_the_rest() -> None:
    order = np.arange(6, dtype=np.int64)
    genres = np.asarray([0, 0, 0, 1, 0, -1], np.int64)
    assert rk.diversify(order, 4, genres, 2).tolist() == [0, 1, 3, 5]
    # Not enough other genres: the best skipped ones fill up.
    assert rk.diversify(order[:3], 3, genres, 1).tolist() == [0, 1, 2]


def test_mmr_prefers_a_different_title_over_a_near_duplicate() -> None:
    emb = unit([1, 0], [1, 0.01], [0, 1])
    scores = np.asarray([1.0, 0.99, 0.9], np.float32)
    order = np.arange(3, dtype=np.int64)
    assert rk.diversify(order, 2, np.full(3, -1), 0, emb, scores, 1.0).tolist() == [0, 1]
    assert rk.diversify(order, 2, np.full(3, -1), 0, emb, scores, 0.5).tolist() == [0, 2]


def test_pattern_query_pulls_toward_successful_patterns_only_when_weighted() -> None:
    p = unit([1, 0])[0]
    contents = unit([0, 1])
    same = rk.pattern_query(p, np.ones(1, np.float32), np.ones(1, np.float32), contents, 0.0)
    assert same is p
    pulled = rk.pattern_query(p, np.ones(1, np.float32), np.ones(1, np.float32), contents, 1.0)
    np.testing.assert_allclose(pulled, unit([1, 1])[0], rtol=1e-6)
    failed = rk.pattern_query(p, np.ones(1, np.float32), np.zeros(1, np.float32), contents, 1.0)
    np.testing.assert_allclose(failed, p)


def test_content_anchors_pick_the_most_similar_recent_title() -> None:
    items = unit([1, 0], [0, 1])
    history = unit([0.1, 1], [1, 0.1])
    assert rk.content_anchors(items, history, np.ones(2, np.float32)).tolist() == [1, 0]
    # A much more recent title wins a small similarity gap.
    assert rk.content_anchors(unit([1, 1]), history, np.asarray([1.0, 0.01], np.float32)) \
        .tolist() == [0]


@pytest.mark.parametrize(("source", "kwargs", "text"), [
    ("crowd", {"anchor_title": "Heat", "anchor_finished": True}, "because you finished Heat"),
    ("crowd", {"anchor_title": "Heat", "anchor_finished": False}, "because you watched Heat"),
    ("similar", {"anchor_title": "Heat"}, "similar to Heat"),
    ("trending", {}, "trending in your region"),
    ("popular", {}, "popular now"),
    ("context", {"genre": "Crime", "daypart": "evening"}, "you often enjoy Crime in the evening"),
    ("new", {}, "new in your catalog"),
    ("crowd", {}, "based on what you watched"),
])
def test_reasons_read_as_sentences(source: str, kwargs: dict[str, object], text: str) -> None:
    assert rk.reason_text(source, **kwargs) == text  # type: ignore[arg-type]
