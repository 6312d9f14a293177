"""SASRec, the central sequential baseline: it learns a sequence, and the benchmark runs it.

The model tests need PyTorch (the ``bench`` extra) and are skipped without it; the
window and batching helpers and the fallback to reference figures run everywhere.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from omega.brain.embedder import HashEmbedder
from omega.schema import SettingError
from omega.sim import sasrec
from omega.sim.baselines import Popularity, TrainData, rank
from omega.sim.fedbench import run_federated_quality
from omega.sim.metrics import hit_ndcg
from omega.sim.movielens import load_movielens, split_leave_last
from omega.sim.quality import SASREC, main, run_quality
from omega.sim.report import format_text
from omega.sim.sasrec import SASRecSettings, length_batches, training_windows
from tests.helpers_sim import FAST_QUALITY, Movie, World, make_world, write_ml_latest

# Small and quick; the defaults (the paper's) are for MovieLens.
SMALL = SASRecSettings(maxlen=24, hidden=32, max_epochs=60, patience=6, batch=32)
FAST = replace(FAST_QUALITY, sasrec=SMALL)


@pytest.fixture
def torch_installed() -> None:
    pytest.importorskip("torch")


def sequential_world(n_users: int = 160, n_items: int = 60, seed: int = 1) -> World:
    """Every user walks one global cycle of titles from a random start.

    The next title is fully determined by the last one, while every title is about
    equally popular: a sequence model finds the test item, popularity cannot.
    """
    rng = random.Random(seed)
    movies = tuple(Movie(100 + i, f"Film {i} ({1950 + i})", ("Drama",)) for i in range(n_items))
    ratings: list[tuple[int, int, int, int]] = []
    for user in range(1, n_users + 1):
        start, length = rng.randrange(n_items), rng.randrange(8, 20)
        for step in range(length):
            ratings.append((user, 100 + (start + step) % n_items, 4,
                            1_000_000_000 + user * 100_000 + 60 * step))
    return World(movies, tuple(ratings))


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ml_latest(tmp_path_factory.mktemp("seq") / "ml-latest-small",
                           sequential_world())


def test_training_windows_cut_from_the_end_and_shift_items_by_one() -> None:
    seqs = [np.array([5, 6, 7, 8, 9, 10, 11]), np.array([3]), np.array([1, 2])]
    x, y = training_windows(seqs, 4)
    # Inputs s[:-1], targets s[1:], pieces of 4 from the end, left-padded, items + 1.
    assert x.tolist() == [[8, 9, 10, 11], [0, 0, 6, 7], [0, 0, 0, 2]]
    assert y.tolist() == [[9, 10, 11, 12], [0, 0, 7, 8], [0, 0, 0, 3]]
    last_x, last_y = training_windows(seqs, 4, every=False)
    assert last_x.tolist() == [[8, 9, 10, 11], [0, 0, 0, 2]]
    assert last_y.tolist() == [[9, 10, 11, 12], [0, 0, 0, 3]]
    empty_x, _ = training_windows([np.array([4])], 4)
    assert empty_x.shape == (0, 4)


def test_length_batches_cover_every_window_once_with_similar_lengths() -> None:
    lengths = np.array([1, 9, 2, 9, 1, 3, 8, 2, 9, 1], dtype=np.int64)
    batches = length_batches(lengths, 3, np.random.default_rng(0))
    assert sorted(int(i) for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 for b in batches)
    # Sorted by length before cutting: a batch spans neighbouring lengths only.
    spans = sorted(int(lengths[b].max() - lengths[b].min()) for b in batches)
    assert spans[-1] <= 1
    again = length_batches(lengths, 3, np.random.default_rng(0))
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(SettingError):
        SASRecSettings(hidden=50, heads=3)
    with pytest.raises(SettingError):
        SASRecSettings(dropout=1.0)
    with pytest.raises(SettingError):
        SASRecSettings(max_epochs=0)


@pytest.mark.usefixtures("torch_installed")
def test_it_learns_a_sequence_that_popularity_cannot_see(sequential: Path) -> None:
    data = load_movielens(sequential)
    users = split_leave_last(data).users
    train = [u.train for u in users]
    fit = sasrec.fit_sasrec(train, data.n_items, train, [u.val_item for u in users],
                            settings=SMALL)
    # Early stopping on validation: the kept epoch is the best one seen.
    assert fit.val_ndcg == max(e.val_ndcg for e in fit.epochs)
    assert fit.epochs[fit.best_epoch - 1].val_ndcg == fit.val_ndcg
    assert fit.windows == len(users) and fit.positions == sum(len(t) - 1 for t in train)
    targets = [u.test_item for u in users]
    pop = Popularity.fit(TrainData(split_leave_last(data).train_matrix()))
    for history in ("all", "train"):
        hists = [u.test_history(history) for u in users]
        s_hit, s_ndcg = hit_ndcg(rank(fit.scorer, hists, 10), targets)
        p_hit, _ = hit_ndcg(rank(pop, hists, 10), targets)
        # 60 equally popular titles: popularity finds about 10/60 of the targets.
        assert p_hit.mean() < 0.35
        assert s_hit.mean() > p_hit.mean() + 0.4, history
        assert s_ndcg.mean() > 0.3, history
    # History B (the validation item seen): the target is the successor of the last view.
    b_hit, _ = hit_ndcg(rank(fit.scorer, [u.test_history("all") for u in users], 1), targets)
    assert b_hit.mean() > 0.5


@pytest.mark.usefixtures("torch_installed")
def test_the_fit_is_deterministic_and_leaves_torch_threads_as_they_were(
    sequential: Path,
) -> None:
    import torch

    data = load_movielens(sequential)
    users = split_leave_last(data).users[:40]
    train = [u.train for u in users]
    s = replace(SMALL, max_epochs=3)
    before = torch.get_num_threads()
    a = sasrec.fit_sasrec(train, data.n_items, train, [u.val_item for u in users], settings=s)
    b = sasrec.fit_sasrec(train, data.n_items, train, [u.val_item for u in users], settings=s)
    assert torch.get_num_threads() == before
    assert [e.loss for e in a.epochs] == [e.loss for e in b.epochs]
    np.testing.assert_array_equal(a.scorer.scores(train), b.scorer.scores(train))
    c = sasrec.fit_sasrec(train, data.n_items, train, [u.val_item for u in users],
                          settings=replace(s, seed=s.seed + 1))
    assert not np.array_equal(a.scorer.scores(train), c.scorer.scores(train))


@pytest.mark.usefixtures("torch_installed")
def test_bad_input_is_refused(sequential: Path) -> None:
    with pytest.raises(ValueError, match="outside the catalog"):
        sasrec.fit_sasrec([np.array([0, 1, 5])], 5, [], [], settings=SMALL)
    with pytest.raises(ValueError, match="two items"):
        sasrec.fit_sasrec([np.array([1])], 5, [], [], settings=SMALL)
    with pytest.raises(ValueError, match="validation histories"):
        sasrec.fit_sasrec([np.array([0, 1])], 5, [np.array([0])], [], settings=SMALL)


@pytest.mark.usefixtures("torch_installed")
def test_the_quality_run_adds_a_sasrec_row_compared_like_every_baseline(
    sequential: Path, tmp_path: Path
) -> None:
    report = run_quality(sequential, brain_factory=None, embedder=HashEmbedder(),
                         progress=False, settings=FAST, cache_dir=tmp_path)
    row = report.method(SASREC)
    assert row.cold is None and row.val_ndcg is not None and row.params["epochs"] >= 1
    assert row.test.hr > report.method("most popular").test.hr + 0.3
    assert {c.slice for c in report.comparisons if c.other == SASREC} == {"test"}
    assert SASREC in report.timings
    assert SASREC in format_text(report)
    doc = json.loads(json.dumps(report.to_dict()))
    assert SASREC in [m["name"] for m in doc["methods"]]
    off = run_quality(sequential, brain_factory=None, embedder=HashEmbedder(), progress=False,
                      settings=replace(FAST, sasrec=None), cache_dir=tmp_path)
    assert SASREC not in [m.name for m in off.methods]


@pytest.mark.usefixtures("torch_installed")
def test_the_federated_run_measures_sasrec_instead_of_quoting_it(tmp_path: Path) -> None:
    folder = write_ml_latest(tmp_path / "ml-latest-small", make_world(n_users=60))
    report = run_federated_quality(folder, embedder=HashEmbedder(),
                                   settings=replace(FAST, max_users=12), brain=None,
                                   progress=False, cache_dir=tmp_path / "c")
    assert SASREC in [m.name for m in report.methods]
    info = report.federated
    assert info is not None
    assert info["sasrec_reference"]["measured"] is True
    assert not any("reference figure" in line for line in info["text"])
    # The same model scored with the other history (A here), printed beside.
    other = info["other_history"]
    assert other["history"] == "train"
    assert [m["name"] for m in other["methods"]] == [SASREC]
    assert any(line.startswith(f"  {SASREC} with history train") for line in info["text"])


def test_without_pytorch_the_reference_figures_are_printed_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sasrec, "available", lambda: False)
    folder = write_ml_latest(tmp_path / "ml-latest-small", make_world(n_users=60))
    report = run_federated_quality(folder, embedder=HashEmbedder(),
                                   settings=replace(FAST, max_users=12), brain=None,
                                   progress=False, cache_dir=tmp_path / "c")
    assert SASREC not in [m.name for m in report.methods]
    info = report.federated
    assert info is not None
    assert info["sasrec_reference"] == {"hr": 0.093, "ndcg": 0.044, "measured": False}
    assert any("reference figure" in line for line in info["text"])


def test_no_sasrec_flag_skips_it(
    sequential: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data", str(sequential), "--brain", "none", "--embedder", "hash", "--no-progress",
            "--json", "--cache-dir", str(tmp_path), "--no-cold-start", "--no-sasrec",
            "--held-out-positions", "0"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert SASREC not in [m["name"] for m in doc["methods"]]
    assert "EASE" in [m["name"] for m in doc["methods"]]
