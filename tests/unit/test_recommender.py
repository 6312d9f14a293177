"""The ranking functions of omega.brain.recommender, on small hand-made arrays (and a few
checks of how the Brain wires them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from omega import Brain, Content, ViewingEvent
from omega.brain import recommender as rk
from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings, RecommenderSettings

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


def test_pattern_weights_scale_by_similarity_and_success_only_when_on() -> None:
    sims = np.asarray([0.9, -0.2, 0.5], np.float32)
    rates = np.asarray([1.0, 1.0, 0.2], np.float32)
    np.testing.assert_allclose(rk.pattern_weights(sims, rates, 0.5), [0.45, 0.0, 0.05],
                               rtol=1e-6)
    assert not rk.pattern_weights(sims, rates, 0.0).any()


def test_history_similarity_at_sharpness_one_is_the_weighted_mean_cosine() -> None:
    rows = np.asarray([[0.9, 0.1, -0.5], [0.3, 0.5, 0.2]], np.float32)
    out = rk.history_similarity(rows, np.asarray([3.0, 1.0], np.float32), 1.0)
    # Negative cosines count as 0.
    np.testing.assert_allclose(out, [(2.7 + 0.3) / 4, (0.3 + 0.5) / 4, 0.2 / 4], rtol=1e-6)


def test_a_sharp_history_similarity_prefers_one_close_match_to_many_vague_ones() -> None:
    # Title 0 is very like the older view only; title 1 is fairly like both views.
    rows = np.asarray([[0.1, 0.6], [0.95, 0.6]], np.float32)
    w = np.asarray([1.0, 0.85], np.float32)
    mean = rk.history_similarity(rows, w, 1.0)
    sharp = rk.history_similarity(rows, w, 16.0)
    assert mean[1] > mean[0]
    assert sharp[0] > sharp[1]
    # Still on the cosine scale: the power mean of equal cosines is that cosine.
    np.testing.assert_allclose(sharp[1], 0.6, rtol=1e-5)
    assert float(sharp[0]) < 0.95


@pytest.mark.parametrize("p", [1.0, 2.0, 5.0, 16.0, 2.5])
def test_history_similarity_matches_the_formula_for_any_sharpness(p: float) -> None:
    rng = np.random.default_rng(3)
    rows = rng.uniform(-0.2, 1.0, (4, 7)).astype(np.float32)
    w = rng.uniform(0.1, 1.0, 4).astype(np.float32)
    expected = ((w[:, None] * np.clip(rows, 0, None) ** p).sum(0) / w.sum()) ** (1 / p)
    np.testing.assert_allclose(rk.history_similarity(rows, w, p), expected, rtol=1e-4)


def test_history_similarity_without_views_or_weight_is_zero() -> None:
    assert not rk.history_similarity(np.zeros((0, 3), np.float32), np.zeros(0, np.float32),
                                     16.0).any()
    assert not rk.history_similarity(np.ones((2, 3), np.float32), np.zeros(2, np.float32),
                                     16.0).any()


def test_unreleased_titles_only_fill_what_released_ones_cannot() -> None:
    cand = np.arange(4, dtype=np.int64)
    sig = signals(4, content=np.asarray([0.9, 0.8, 0.7, 0.1]))
    later = np.asarray([True, False, True, False])
    out = rk.rank(cand, sig, PLAIN, 3, later=later)
    assert [r.item for r in out] == [1, 3, 0]
    # Everything unreleased: still the best first.
    out = rk.rank(cand, sig, PLAIN, 2, later=np.ones(4, dtype=bool))
    assert [r.item for r in out] == [0, 1]


def test_unreleased_titles_stay_last_under_strong_diversity() -> None:
    emb = unit([1, 0], [1, 0.01], [0, 1])
    cand = np.arange(3, dtype=np.int64)
    sig = signals(3, content=np.asarray([1.0, 0.99, 0.2]))
    out = rk.rank(cand, sig, replace(PLAIN, mmr_lambda=0.1), 3, embeddings=emb,
                  later=np.asarray([False, False, True]))
    assert out[-1].item == 2


def test_content_anchors_pick_the_most_similar_recent_title() -> None:
    items = unit([1, 0], [0, 1])
    history = unit([0.1, 1], [1, 0.1])
    assert rk.content_anchors(items, history, np.ones(2, np.float32)).tolist() == [1, 0]
    # A much more recent title wins a small similarity gap.
    assert rk.content_anchors(unit([1, 1]), history, np.asarray([1.0, 0.01], np.float32)) \
        .tolist() == [0]


def test_sharp_content_anchors_name_the_view_the_title_was_found_through() -> None:
    # The older view is much closer: at sharpness 16 it outweighs the recency.
    items = unit([1, 0.05])
    history = unit([1, 1], [1, 0])
    w = np.asarray([1.0, 0.5], np.float32)
    assert rk.content_anchors(items, history, w).tolist() == [0]
    assert rk.content_anchors(items, history, w, 16.0).tolist() == [1]


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


# -- through the Brain (real LMDB, the hash embedder) -------------------------------------

T0 = 1_700_000_000  # November 2023
TOYS = [
    Content(id="toy1", title="Toy Story", year=1995, genres=("Animation", "Children", "Comedy")),
    Content(id="toy2", title="Toy Story 2", year=1999, genres=("Animation", "Children", "Comedy")),
    Content(id="heat", title="Heat", year=1995, genres=("Action", "Crime", "Thriller")),
    Content(id="alien", title="Alien", year=1979, genres=("Horror", "Sci-Fi")),
]
TOY5 = Content(id="toy5", title="Toy Story 5", year=2030,
               genres=("Animation", "Children", "Comedy"))


def open_brain(path: Path) -> Brain:
    return Brain.open(path, BrainSettings(durability="nosync"), embedder=HashEmbedder())


def test_a_title_not_released_yet_waits_until_its_year(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        b.add_content([*TOYS, TOY5])
        b.observe(ViewingEvent("toy1", 0.95, T0))
        now = [r.content_id for r in b.recommend(k=3, timestamp=T0 + 10)]
        assert now[0] == "toy2" and "toy5" not in now
        # Only when nothing released is left does it fill the list.
        assert b.recommend(k=4, timestamp=T0 + 10)[-1].content_id == "toy5"
        later = b.recommend(k=2, timestamp=1_900_000_000)  # 2030
        assert [r.content_id for r in later] == ["toy2", "toy5"]
        assert later[1].reason == "similar to Toy Story"


def test_a_clock_behind_the_history_does_not_hold_the_catalog_back(tmp_path: Path) -> None:
    old = Content(id="metropolis", title="Metropolis", year=1927, genres=("Drama", "Sci-Fi"))
    with open_brain(tmp_path / "tv") as b:
        b.add_content([*TOYS, TOY5, old])
        b.observe(ViewingEvent("toy2", 0.95, T0))
        # The TV's clock says 1970, but the viewer has watched a 1999 title: now >= 1999.
        recs = [r.content_id for r in b.recommend(k=5, timestamp=1000)]
        assert recs[0] == "toy1" and recs[-1] == "toy5"
        # Nothing watched yet: only the clock is known (1970), so 1927 goes first.
    with open_brain(tmp_path / "tv2") as b:
        b.add_content([*TOYS, old])
        assert b.recommend(k=1, timestamp=1000)[0].content_id == "metropolis"


def test_content_similarity_follows_catalog_updates(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        b.add_content(TOYS)
        b.observe(ViewingEvent("toy1", 0.95, T0))
        assert b.recommend(k=1, timestamp=T0)[0].content_id == "toy2"
        # The cached similarity rows were computed for 4 titles; now there are 5.
        b.add_content([replace(TOY5, id="toy3", title="Toy Story 3", year=2010)])
        assert [r.content_id for r in b.recommend(k=2, timestamp=T0)] in (
            ["toy2", "toy3"], ["toy3", "toy2"])
        b.observe(ViewingEvent("toy2", 0.95, T0 + 1))
        assert b.recommend(k=1, timestamp=T0 + 1)[0].content_id == "toy3"
