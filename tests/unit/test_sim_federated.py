"""The federated quality benchmark and the release adversary on a small synthetic world."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from omega.brain.embedder import HashEmbedder
from omega.federation.report import coview, title_key
from omega.sim.fedbench import (
    CENTRAL_LISTS,
    FEDERATED,
    FEDERATED_DP,
    FEDERATED_DP_1M,
    BrainCrowdSettings,
    run_federated_quality,
)
from omega.sim.federated import FederatedSettings, simulate_crowd, tv_coviews
from omega.sim.membership import release_adversary
from omega.sim.movielens import load_movielens, split_leave_last
from omega.sim.quality import main
from tests.helpers_sim import FAST_QUALITY, make_world, write_ml_latest

FAST = FAST_QUALITY


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ml_latest(tmp_path_factory.mktemp("ml") / "ml-latest-small",
                           make_world(n_users=60))


def test_a_tv_reports_each_windowed_training_pair_once_newest_last(folder: Path) -> None:
    data = load_movielens(folder)
    user = split_leave_last(data).users[0]
    s = FederatedSettings(window=2)
    cvs = tv_coviews(user, data.items, s)
    ids = [str(data.items[int(i)].id) for i in user.train]
    expected = {(min(title_key(x), title_key(y)), max(title_key(x), title_key(y)))
                for i, x in enumerate(ids) for y in ids[max(0, i - 2):i] if x != y}
    assert {(c.a, c.b) for c in cvs} == expected
    assert len(cvs) == len(expected)
    # The validation and test items are never reported.
    held = {title_key(str(data.items[user.val_item].id)),
            title_key(str(data.items[user.test_item].id))} - {title_key(i) for i in ids}
    assert not held & {k for c in cvs for k in (c.a, c.b)}
    last = coview(ids[-1], ids[-2], 1.0)
    assert (cvs[-1].a, cvs[-1].b) == (last.a, last.b)
    capped = tv_coviews(user, data.items, replace(s, contributions=3))
    assert capped == cvs[-3:]


def test_the_hub_sums_exactly_what_the_tvs_sealed(folder: Path) -> None:
    data = load_movielens(folder)
    users = split_leave_last(data).users
    s = FederatedSettings(batch=7)
    crowd = simulate_crowd(users, data.items, s)
    expected = sum(len(tv_coviews(u, data.items, s)) for u in users)
    assert crowd.reports == crowd.sums.reports == expected
    assert crowd.batches == -(-expected // 7)
    u = users[0]
    cv = tv_coviews(u, data.items, s)[0]
    count = sum(1 for v in users for c in tv_coviews(v, data.items, s)
                if (c.a, c.b) == (cv.a, cv.b))
    assert crowd.sums.pair(cv.a, cv.b)[1] == count


def test_federated_rows_by_the_real_brain_beside_the_baselines(
    folder: Path, tmp_path: Path
) -> None:
    fed = FederatedSettings(fleet=1_000_000)
    report = run_federated_quality(
        folder, embedder=HashEmbedder(), settings=replace(FAST, max_users=12), federated=fed,
        brain=BrainCrowdSettings(content=0.0), progress=False, cache_dir=tmp_path / "c",
        work_dir=tmp_path / "w", tune=False,  # content 0: what the lists alone bring
    )
    names = [m.name for m in report.methods]
    assert names[:3] == [FEDERATED, FEDERATED_DP, FEDERATED_DP_1M]
    assert {"most popular", "item-kNN", "EASE", "EASE + recency", CENTRAL_LISTS} <= set(names)
    assert report.reference == FEDERATED
    fedrow, dp = report.method(FEDERATED), report.method(FEDERATED_DP)
    # Clustered tastes: the crowd's lists find the next title; noise at 60 TVs erases them.
    assert fedrow.test.hr > dp.test.hr
    assert fedrow.test.hr >= report.method("most popular").test.hr
    info = report.federated
    assert info is not None
    assert info["releases"][FEDERATED_DP]["pairs_published"] < \
        info["releases"][FEDERATED]["pairs_published"]
    assert info["releases"][FEDERATED_DP_1M]["sigma"] < info["releases"][FEDERATED_DP]["sigma"]
    assert info["sasrec_reference"]["measured"] is False
    assert info["fleet_sweep"][0]["fleet"] == 60
    doc = json.loads(json.dumps(report.to_dict()))
    assert [m["name"] for m in doc["methods"]][:3] == [FEDERATED, FEDERATED_DP, FEDERATED_DP_1M]
    assert doc["history"] == "all"


def test_command_line_runs_federated_in_numpy_and_refuses_bad_epsilon(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data", str(folder), "--federated", "--brain", "none", "--embedder", "hash",
            "--no-progress", "--cache-dir", str(tmp_path), "--no-sasrec"]
    assert main([*base, "--json", "--max-users", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["federated"]["free_at_fleet"] is None or doc["federated"]["free_at_fleet"] >= 60
    assert main([*base, "--epsilon", "0"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main([*base, "--top-k", "201"]) == 2
    assert "top_k" in capsys.readouterr().err
    assert main([*base, "--json", "--max-users", "5", "--top-k", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["federated"]["top_k"] == 20


def test_release_adversary_names_titles_without_noise_and_not_much_with_it(
    folder: Path,
) -> None:
    data = load_movielens(folder)
    users = list(split_leave_last(data).users)
    rows = release_adversary(users, data.items, FederatedSettings(), settings=(None, 1.0),
                             targets=20, releases_per_day=4)
    none, dp = rows
    assert none["adversary"] == dp["adversary"] == "release"
    assert none["top1"] == 1.0 and none["epsilon_per_day"] is None
    assert dp["default"] is True and dp["epsilon_per_day"] > 1.0
    assert dp["advantage_top10"] < none["advantage_top10"]
    for r in rows:
        assert 0 <= r["chance_top1"] <= r["chance_top10"] <= 1
        assert set(r) >= {"setting", "top1", "top10", "chance_top1", "chance_top10",
                          "advantage_top1", "advantage_top10", "epsilon_per_day"}
    assert np.isfinite(dp["sigma"]) and dp["sigma"] > 0


def test_bench_privacy_gets_the_release_rows_with_their_quality(folder: Path) -> None:
    from omega.sim.privacy import release_rows

    rows = release_rows(folder, 0)
    assert [r["adversary"] for r in rows] == ["release"] * len(rows) and rows
    for r in rows:
        assert {"hr_real", "ndcg_real", "hr_fleet", "ndcg_fleet"} <= set(r["quality"])
    assert sum(r["default"] for r in rows) == 1
