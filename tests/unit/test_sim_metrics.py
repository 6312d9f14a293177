"""Ranking metrics: top-k with exclusions and ties, HR/NDCG, coverage, paired intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omega.sim.metrics import (
    Z95,
    clustered_paired_diff,
    coverage,
    group_means,
    hit_ndcg,
    mean_se,
    pad_lists,
    paired_diff,
    top_k,
)


def test_top_k_orders_by_score_and_excludes_history() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7, 0.3], [5.0, 4.0, 3.0, 2.0, 1.0]])
    lists = top_k(scores, [[1], [0, 2]], 3)
    assert lists.tolist() == [[3, 2, 4], [1, 3, 4]]


def test_top_k_breaks_exact_ties_by_lower_index() -> None:
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 2.0, 0.0]])
    assert top_k(scores, [[]], 3).tolist() == [[1, 2, 3]]
    assert top_k(scores, [[2]], 3).tolist() == [[1, 3, 4]]
    # Equal scores everywhere: the lowest indices, in order.
    assert top_k(np.zeros((1, 8)), [[0]], 4).tolist() == [[1, 2, 3, 4]]


def test_top_k_pads_when_fewer_items_may_be_recommended() -> None:
    scores = np.array([[1.0, np.nan, -np.inf, 3.0]])
    assert top_k(scores, [[3]], 3).tolist() == [[0, -1, -1]]
    assert top_k(np.ones((2, 3)), [[0, 1, 2], []], 5).tolist() == [
        [-1, -1, -1, -1, -1],
        [0, 1, 2, -1, -1],
    ]


def test_top_k_matches_a_full_sort_on_random_scores() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((50, 40)), 1)  # many ties
    exclude = [rng.choice(40, size=5, replace=False) for _ in range(50)]
    got = top_k(scores, exclude, 10)
    for row in range(50):
        s = scores[row].copy()
        s[exclude[row]] = -np.inf
        want = sorted(range(40), key=lambda j: (-s[j], j))[:10]
        assert got[row].tolist() == want


def test_top_k_refuses_mismatched_exclusions() -> None:
    with pytest.raises(ValueError, match="exclusion"):
        top_k(np.zeros((2, 3)), [[]], 1)


def test_hit_and_ndcg_by_position() -> None:
    lists = np.array([[7, 3, 5], [3, 5, 7], [1, 2, -1], [9, 8, 7]])
    hit, ndcg = hit_ndcg(lists, [7, 3, 4, 7])
    assert hit.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert ndcg[0] == pytest.approx(1.0)
    assert ndcg[1] == pytest.approx(1.0)
    assert ndcg[2] == 0.0
    assert ndcg[3] == pytest.approx(1 / math.log2(4))
    with pytest.raises(ValueError, match="targets"):
        hit_ndcg(lists, [1, 2])


def test_pad_lists_cuts_and_pads() -> None:
    assert pad_lists([[4, 5, 6], [], [1]], 2).tolist() == [[4, 5], [-1, -1], [1, -1]]


def test_coverage_counts_distinct_items_only() -> None:
    lists = np.array([[0, 1, -1], [1, 2, -1]])
    assert coverage(lists, 10) == pytest.approx(0.3)
    assert coverage(lists, 0) == 0.0


def test_mean_and_standard_error() -> None:
    mean, se = mean_se([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5
    assert se == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert math.isnan(mean_se([])[0])
    assert math.isnan(mean_se([1.0])[1])


def test_paired_difference_uses_per_user_differences() -> None:
    a = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    b = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    d = paired_diff(a, b)
    diffs = a - b
    se = diffs.std(ddof=1) / math.sqrt(len(diffs))
    assert d.diff == pytest.approx(diffs.mean())
    assert d.se == pytest.approx(se)
    assert (d.low, d.high) == pytest.approx((diffs.mean() - Z95 * se, diffs.mean() + Z95 * se))
    assert d.n == 6
    assert not d.significant
    # Identical methods differ by exactly zero; a method that always wins is significant.
    assert paired_diff(a, a).diff == 0.0
    assert paired_diff(np.ones(30), np.r_[np.zeros(25), np.ones(5)]).significant
    with pytest.raises(ValueError, match="shape"):
        paired_diff(a, b[:3])


def test_group_means_average_each_group() -> None:
    means = group_means([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [7, 7, 3, 3, 3, 9])
    np.testing.assert_allclose(means, [2 / 3, 0.5, 1.0])  # groups 3, 7, 9
    with pytest.raises(ValueError, match="groups"):
        group_means([1.0, 2.0], [1])


def test_clustered_paired_diff_averages_each_user_before_pairing() -> None:
    # User 0: 4 cases, a wins all; user 1: 1 case, tie; user 2: 2 cases, b wins one.
    a = [1, 1, 1, 1, 0, 0, 0]
    b = [0, 0, 0, 0, 0, 0, 1]
    users = [0, 0, 0, 0, 1, 2, 2]
    d = clustered_paired_diff(a, b, users)
    per_user = np.array([1.0, 0.0, -0.5])
    assert d.n == 3
    assert d.diff == pytest.approx(per_user.mean())
    assert d.se == pytest.approx(per_user.std(ddof=1) / math.sqrt(3))
    assert (d.low, d.high) == pytest.approx((d.diff - Z95 * d.se, d.diff + Z95 * d.se))
    # One case per user: the same as the per-user paired difference.
    single = clustered_paired_diff(a, b, list(range(7)))
    assert single == paired_diff(a, b)
    with pytest.raises(ValueError, match="shape"):
        clustered_paired_diff([1.0, 0.0], [1.0], [0, 1])


def test_clustered_interval_is_wider_than_treating_cases_as_independent() -> None:
    # Ten users whose cases all agree with each other: 10 independent facts, not 100.
    rng = np.random.default_rng(3)
    user_effect = rng.choice([0.0, 1.0], size=10)
    a = np.repeat(user_effect, 10)
    b = np.zeros(100)
    users = np.repeat(np.arange(10), 10)
    clustered = clustered_paired_diff(a, b, users)
    naive = paired_diff(a, b)
    assert clustered.diff == pytest.approx(naive.diff)
    assert clustered.high - clustered.low > 2.5 * (naive.high - naive.low)
