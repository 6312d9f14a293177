"""Choosing the brain's blend on validation (omega.sim.blendtune) on a small synthetic world."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings
from omega.federation.release import Release
from omega.sim.blendtune import BlendGrid, tune_blend
from omega.sim.fedbench import FEDERATED, BrainCrowdSettings, run_federated_quality
from omega.sim.federated import (
    BrainBlendScorer,
    FederatedSettings,
    rank_blend,
    simulate_crowd,
)
from omega.sim.metrics import hit_ndcg
from omega.sim.movielens import MovieLens, UserHistory, load_movielens, split_leave_last
from omega.sim.quality import QualitySettings
from tests.helpers_sim import make_world, write_ml_latest

FAST = QualitySettings(
    ease_lambdas=(5.0,), knn_neighbours=(5,), content_last_n=(1,),
    content_popularity=(0.2,), cold_folds=4, held_out_positions=0, max_users=10,
    sasrec=None,  # SASRec: test_sim_sasrec
)  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ml_latest(tmp_path_factory.mktemp("ml") / "ml-latest-small",
                           make_world(n_users=50))


@pytest.fixture(scope="module")
def world(folder: Path) -> tuple[MovieLens, list[UserHistory], Release, np.ndarray]:
    data = load_movielens(folder)
    users = list(split_leave_last(data).users)
    fed = FederatedSettings()
    rel = simulate_crowd(users, data.items, fed).release(fed, noise=False, fleet=None)
    emb = HashEmbedder()
    vectors = emb.embed([it.title for it in data.items]).astype(np.float32)
    return data, users, rel, vectors


def _val(users: list[UserHistory]) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    return ([u.train for u in users], [u.fractions[: len(u.train)] for u in users],
            [u.val_item for u in users])


def test_each_grid_point_scores_what_the_brains_formula_scores(world: tuple) -> None:
    data, users, rel, vectors = world
    hists, fracs, targets = _val(users)
    grid = BlendGrid(decays=(0.5, 0.9), contents=(0.0, 1.5), popularities=(0.05, 2.0))
    best, points = tune_blend(rel, data.items, vectors, hists, fracs, targets, grid=grid)
    assert len(points) == 8
    for q in points:
        scorer = BrainBlendScorer(rel, data.items, vectors, q.settings(BrainSettings()))
        hr, ndcg = hit_ndcg(rank_blend(scorer, hists, fracs, 10), targets)
        assert (q.val_hr, q.val_ndcg) == pytest.approx((hr.mean(), ndcg.mean()), abs=1e-9)
    assert best.val_ndcg == max(q.val_ndcg for q in points)


def test_popularity_wins_where_the_validation_items_are_the_popular_ones(world: tuple) -> None:
    data, users, rel, vectors = world
    hists, fracs, _ = _val(users)
    # Every validation target is the release's most popular title the user has not seen.
    order = sorted(rel.popularity, key=lambda c: -rel.popularity[c])
    pos = {str(it.id): p for p, it in enumerate(data.items)}
    targets = [next(pos[c] for c in order if pos[c] not in set(h.tolist())) for h in hists]
    grid = BlendGrid(decays=(0.6,), contents=(1.5,), popularities=(0.0, 50.0))
    best, points = tune_blend(rel, data.items, vectors, hists, fracs, targets, grid=grid,
                              default=(0.6, 1.5, 0.0))
    assert best.popularity == 50.0  # a clear win beats the defaults
    assert best.val_hr > points[0].val_hr


def test_the_defaults_stay_unless_beaten_by_more_than_a_standard_error(world: tuple) -> None:
    data, users, rel, vectors = world
    hists, fracs, targets = _val(users)
    # Two points that rank alike: the first is "best" by order, the defaults are kept.
    grid = BlendGrid(decays=(0.6,), contents=(1.5,), popularities=(0.05, 0.0500001))
    best, points = tune_blend(rel, data.items, vectors, hists, fracs, targets, grid=grid,
                              default=(0.6, 1.5, 0.0500001))
    assert points[0].val_ndcg == points[1].val_ndcg
    assert best == points[1]
    best, _ = tune_blend(rel, data.items, vectors, hists, fracs, targets, grid=grid)
    assert best == points[0]


def test_bad_grids_and_mismatched_inputs_are_refused(world: tuple) -> None:
    data, users, rel, vectors = world
    with pytest.raises(ValueError, match="decays"):
        BlendGrid(decays=())
    with pytest.raises(ValueError, match="popularities"):
        BlendGrid(popularities=(float("nan"),))
    hists, fracs, targets = _val(users)
    with pytest.raises(ValueError, match="same length"):
        tune_blend(rel, data.items, vectors, hists, fracs, targets[:-1])


def test_the_federated_bench_records_the_chosen_weights_and_no_tune_keeps_them(
    folder: Path, tmp_path: Path
) -> None:
    start = BrainCrowdSettings(recency_decay=0.6, content=1.5, popularity=0.05)
    kw = {"embedder": HashEmbedder(), "settings": FAST, "brain": None, "progress": False,
          "cache_dir": tmp_path / "c", "federated": FederatedSettings()}
    tuned = run_federated_quality(folder, **kw)  # type: ignore[arg-type]
    fixed = run_federated_quality(folder, tune=False, **kw)  # type: ignore[arg-type]
    assert tuned.federated is not None and fixed.federated is not None
    chosen = tuned.federated["weights_chosen_on_validation"][FEDERATED]
    grid = BlendGrid()
    assert chosen["decay"] in grid.decays and chosen["content"] in grid.contents
    assert chosen["points"] == len(grid.decays) * len(grid.contents) * len(grid.popularities)
    assert chosen["val_ndcg"] >= chosen["default_val_ndcg"]
    row = tuned.method(FEDERATED)
    assert row.params["decay"] == chosen["decay"]
    assert row.val_ndcg == pytest.approx(chosen["val_ndcg"], abs=1e-4)
    assert fixed.federated["weights_chosen_on_validation"] == {}
    assert fixed.method(FEDERATED).params["decay"] == start.recency_decay
    assert replace(start, tune=False).brain_settings().recommender.popularity_with_crowd == 0.05
