"""Baselines against exact "dumb" oracles: explicit inverses, full similarity matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from omega.sim.baselines import (
    Baseline,
    ContentProfile,
    Ease,
    EaseSolver,
    ItemKnn,
    Params,
    Popularity,
    TrainData,
    cold_start_lists,
    default_baselines,
    rank,
    recency_weights,
    tune,
)

Hist = npt.NDArray[np.int64]


def _data(users: int, items: int, seed: int = 0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    x = (rng.random((users, items)) < 0.3).astype(np.float64)
    x[:, -1] = 0.0  # an item nobody trained on
    return x


def _histories(x: npt.NDArray[np.float64]) -> list[Hist]:
    rng = np.random.default_rng(1)
    return [rng.permutation(np.flatnonzero(row)).astype(np.int64) for row in x]


def _ease_oracle(x: npt.NDArray[np.float64], lam: float) -> npt.NDArray[np.float64]:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def test_recency_weights() -> None:
    assert recency_weights(4, 0.5).tolist() == [0.125, 0.25, 0.5, 1.0]
    assert recency_weights(4, None).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert recency_weights(4, 0.5, last_n=2).tolist() == [0.0, 0.0, 0.5, 1.0]
    assert recency_weights(0, 0.9).size == 0


@pytest.mark.parametrize(("users", "items"), [(12, 30), (40, 15)])  # dual and primal forms
@pytest.mark.parametrize("decay", [None, 0.9])
def test_ease_matches_the_explicit_inverse(users: int, items: int, decay: float | None) -> None:
    x = _data(users, items)
    hist = _histories(x)
    solver = EaseSolver(x)
    assert solver.dual == (users < items)
    for lam in (3.0, 50.0):
        got = Ease(solver.at(lam), decay).scores(hist)
        b = _ease_oracle(x, lam)
        for row, items_ in enumerate(hist):
            h = np.zeros(items)
            h[items_] = recency_weights(len(items_), decay)
            want = h @ b
            outside = np.setdiff1d(np.arange(items), items_)
            np.testing.assert_allclose(got[row, outside], want[outside], rtol=1e-7, atol=1e-9)


def test_ease_refuses_a_bad_lambda() -> None:
    with pytest.raises(ValueError, match="positive"):
        EaseSolver(_data(5, 8)).at(0.0)


def test_item_knn_matches_a_full_cosine_matrix() -> None:
    x = _data(30, 25, seed=2)
    hist = _histories(x)
    n = np.sqrt(x.sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.nan_to_num((x.T @ x) / np.outer(n, n))
    np.fill_diagonal(sim, -np.inf)
    train = TrainData(x)
    for k in (20, 3):  # largest first, as the tuning grid asks; then a slice of it
        got = ItemKnn(train, k).scores(hist)
        for row, items_ in enumerate(hist):
            want = np.zeros(25)
            for i in items_:
                row_sim = sim[i]
                order = sorted(range(25), key=lambda j: (-row_sim[j], j))[:k]
                want[order] += np.maximum(sim[i, order], 0.0)
            np.testing.assert_allclose(got[row], want, rtol=1e-5, atol=1e-6)


def test_popularity_counts_training_users() -> None:
    x = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    pop = Popularity.fit(TrainData(x))
    assert pop.scores([np.array([0]), np.array([2])]).tolist() == [[2.0, 1.0, 1.0]] * 2
    assert rank(pop, [np.array([0], dtype=np.int64)], 2).tolist() == [[1, 2]]


def test_content_profile_is_cosine_to_the_recent_mean() -> None:
    rng = np.random.default_rng(4)
    e = rng.normal(size=(12, 6)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    hist = [np.array([3, 1, 7], dtype=np.int64)]
    got = ContentProfile(e, last_n=2, decay=0.5).scores(hist)[0]
    p = 0.5 * e[1] + 1.0 * e[7]  # item 3 is older than the last two
    want = e @ (p / np.linalg.norm(p))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    counts = np.arange(12, dtype=np.float64)
    with_pop = ContentProfile(e, 2, 0.5, popularity=0.4, counts=counts).scores(hist)[0]
    np.testing.assert_allclose(with_pop - got, 0.4 * np.log1p(counts) / np.log1p(11), rtol=1e-5)
    with pytest.raises(ValueError, match="counts"):
        ContentProfile(e, 2, 0.5, popularity=0.4).scores(hist)


def test_tune_picks_the_best_validation_ndcg_and_keeps_the_first_on_ties() -> None:
    x = np.zeros((4, 5))
    hist = [np.array([0], dtype=np.int64)] * 4

    class Fixed:
        n_items = 5

        def __init__(self, best: int) -> None:
            self.best = best

        def scores(self, histories: Sequence[Hist]) -> npt.NDArray[np.float64]:
            s = np.zeros((len(histories), 5))
            s[:, self.best] = 1.0
            return s

    grid: tuple[Params, ...] = ({"best": 4}, {"best": 2}, {"best": 3}, {"best": 2})
    baseline = Baseline("fixed", grid, lambda train, p: Fixed(int(p["best"])))
    tuned = tune(baseline, TrainData(x), hist, [2, 2, 2, 3], k=1)
    assert tuned.params == {"best": 2}
    assert tuned.val_hr == 0.75
    assert [t[1] for t in tuned.tried] == [0.0, 0.75, 0.25, 0.75]
    with pytest.raises(ValueError, match="empty"):
        tune(Baseline("none", (), baseline.build), TrainData(x), hist, [2, 2, 2, 3], k=1)


def test_cold_start_lists_come_from_models_without_the_scored_users() -> None:
    x = _data(20, 18, seed=5)
    rows = list(range(0, 20, 2))
    hist = [np.flatnonzero(x[r])[:3].astype(np.int64) for r in rows]
    base = default_baselines(
        decay=0.9, ease_lambdas=(5.0,), knn_neighbours=(4,), content_last_n=(2,),
        content_popularity=(0.5,),
    )  # fmt: skip
    by_name = {b.name: b for b in base}
    cases: list[tuple[str, Params]] = [("EASE", {"lambda": 5.0}), ("item-kNN", {"k": 4})]
    for name, params in cases:
        got = cold_start_lists(by_name[name], params, x, None, rows, hist, k=5, folds=3)
        for pos, row in enumerate(rows):
            fold = pos % 3
            held = [rows[p] for p in range(len(rows)) if p % 3 == fold]
            keep = np.setdiff1d(np.arange(20), held)
            model = by_name[name].build(TrainData(x[keep]), params)
            assert got[pos].tolist() == rank(model, [hist[pos]], 5)[0].tolist()
            assert row in held


def test_cold_start_popularity_forgets_the_users_own_views() -> None:
    # Item 2 was watched by the scored user (row 0) only.
    x = np.array(
        [[0, 1, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=np.float64
    )
    popular = Baseline("most popular", ({},), lambda train, p: Popularity.fit(train))
    history = [np.array([1], dtype=np.int64)]
    got = cold_start_lists(popular, {}, x, None, [0], history, k=3, folds=2)
    assert got.tolist() == [[3, 0, 4]]
    # Fitted with row 0, item 2 would tie with items 0 and 4 and take the last place.
    assert rank(Popularity.fit(TrainData(x)), history, 3).tolist() == [[3, 0, 2]]
