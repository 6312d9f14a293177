"""The federated quality bench at scale: the ml-1m layout end to end, the bounded
shuffler, partial sealing, the fleet sweep's scorer and the real brain on a subset."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from omega.brain.embedder import HashEmbedder
from omega.sim.fedbench import (
    FEDERATED,
    FEDERATED_DP,
    FEDERATED_DP_1M,
    BrainCrowdSettings,
    run_federated_quality,
)
from omega.sim.federated import CrowdScorer, FederatedSettings, simulate_crowd, tv_coviews
from omega.sim.movielens import load_movielens, split_leave_last
from omega.sim.quality import main
from tests.helpers_sim import FAST_QUALITY, make_world, write_ml1m

FAST = FAST_QUALITY


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unzip parent holding one ml-1m folder."""
    root = tmp_path_factory.mktemp("unzipped")
    write_ml1m(root / "ml-1m", make_world(n_users=60))
    return root


def test_sealing_changes_nothing_the_hub_sums(parent: Path) -> None:
    data = load_movielens(parent)
    users = split_leave_last(data).users
    # A tiny shuffler: many forwards of whole batches, then the last partial one.
    s = FederatedSettings(batch=7, shuffle_pool=50)
    expected = sum(len(tv_coviews(u, data.items, s)) for u in users)
    every = simulate_crowd(users, data.items, replace(s, sealed_reports=None))
    some = simulate_crowd(users, data.items, replace(s, sealed_reports=100))
    none = simulate_crowd(users, data.items, replace(s, sealed_reports=0))
    assert every.sealed == every.reports == expected
    assert 0 < some.sealed <= 100 and none.sealed == 0
    for crowd in (every, some, none):
        assert crowd.reports == crowd.sums.reports == expected
        assert crowd.batches == -(-expected // 7)
    assert every.sums == some.sums == none.sums


def _add_at_scores(scorer: CrowdScorer, histories: list[np.ndarray]) -> np.ndarray:
    """The scorer's former loop (np.add.at per view), the reference for its bincount."""
    lists = scorer._lists
    out = np.zeros((len(histories), scorer.n_items))
    for row, hist in enumerate(histories):
        for j, item in enumerate(reversed(hist.tolist())):
            entry = lists.get(int(item))
            if entry is not None:
                np.add.at(out[row], entry[0], scorer.decay ** j * entry[1])
        if out[row].max() > 0:
            out[row] /= out[row].max()
    return out


def test_crowd_scorer_sums_exactly_as_before(parent: Path) -> None:
    data = load_movielens(parent)
    users = split_leave_last(data).users
    s = FederatedSettings()
    rel = simulate_crowd(users, data.items, s).release(s, noise=False, fleet=None)
    scorer = CrowdScorer(rel, data.items, decay=0.6)
    hists = [u.train for u in users]
    got = scorer.scores(hists)
    assert got.max() == 1.0
    assert np.array_equal(got, _add_at_scores(scorer, hists))


def test_bench_reads_ml1m_from_the_unzip_parent_without_a_sasrec_figure(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data", str(parent), "--federated", "--brain", "none", "--embedder", "hash",
            "--no-progress", "--cache-dir", str(tmp_path), "--max-users", "10", "--no-sasrec"]
    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"]["layout"] == "ml-1m"
    assert doc["data"]["dir"] == str(parent / "ml-1m")
    assert [m["name"] for m in doc["methods"]][:3] == [FEDERATED, FEDERATED_DP, FEDERATED_DP_1M]
    # No SASRec figure was measured on this layout: none is printed.
    assert doc["federated"]["sasrec_reference"] is None
    assert doc["federated"]["sealed_reports"] == doc["federated"]["reports"]
    assert main([*base, "--brain-users", "-1"]) == 2
    assert "--brain-users" in capsys.readouterr().err


def test_real_brain_on_a_subset_beside_the_formula_on_everyone(
    parent: Path, tmp_path: Path
) -> None:
    report = run_federated_quality(
        parent, embedder=HashEmbedder(), settings=replace(FAST, max_users=20),
        brain=BrainCrowdSettings(content=0.0, max_users=4, all_users_up_to=0), progress=False,
        cache_dir=tmp_path / "c", work_dir=tmp_path / "w",
    )
    fed = report.method(FEDERATED)
    assert fed.test.users == 20  # the rows: every evaluated user, by the formula
    info = report.federated
    assert info is not None and info["scored_by"] == "brain formula (numpy)"
    check = info["brain_check"]
    assert check["users"] == 4
    assert [c["name"] for c in check["rows"]] == [FEDERATED, FEDERATED_DP, FEDERATED_DP_1M]
    for c in check["rows"]:
        assert 0.0 <= c["brain_hr"] <= 1.0 and 0.0 <= c["formula_hr"] <= 1.0
        assert c["hr_low"] <= c["hr_diff"] <= c["hr_high"]
    assert any("on 4 of them" in line for line in info["text"])
    assert all(m["name"] for m in info["other_history"]["methods"])
