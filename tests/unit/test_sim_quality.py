"""The quality runner end to end on synthetic MovieLens data, with stand-in and real brains."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from omega.brain.embedder import HashEmbedder
from omega.schema import SettingError
from omega.sim.baselines import ContentProfile, rank
from omega.sim.metrics import hit_ndcg
from omega.sim.movielens import COLD_HISTORY, Item, load_movielens, split_leave_last
from omega.sim.quality import QualitySettings, main, run_quality
from omega.sim.replay import (
    BrainSession,
    Embedder,
    SharedEmbedder,
    catalog_embeddings,
    held_out_positions,
    local_brain_factory,
)
from omega.sim.report import CROWD_LISTS, CROWD_POPULARITY, QualityReport, format_text
from tests.helpers_sim import make_world, write_ml100k, write_ml_latest

BASELINES = [
    "most popular", "item-kNN", "EASE", "EASE + recency", "content", "content + popularity",
]  # fmt: skip
# Small grids keep the runs fast; the protocol does not depend on them.
FAST = QualitySettings(
    ease_lambdas=(5.0, 50.0), knn_neighbours=(5, 10), content_last_n=(1, 3),
    content_popularity=(0.2,), cold_folds=4, sasrec=None,  # SASRec: test_sim_sasrec
)  # fmt: skip


@dataclass
class Call:
    """One recommend call: how many views the brain had seen, and the time asked."""

    seen: int
    timestamp: float


@dataclass
class Recorder:
    """What every stand-in brain of a run was asked to do."""

    folders: list[Path] = field(default_factory=list)
    catalogs: list[list[int]] = field(default_factory=list)
    views: list[list[tuple[int, float, float]]] = field(default_factory=list)
    calls: list[list[Call]] = field(default_factory=list)
    closed: int = 0


Policy = Callable[["StandIn", int, float], Sequence[int]]


class StandIn:
    """A BrainSession that sees only what it is sent, scored by a policy."""

    def __init__(self, folder: Path, embedder: Embedder, rec: Recorder, policy: Policy) -> None:
        assert not folder.exists() or not any(folder.iterdir())
        rec.folders.append(folder)
        self.rec, self.policy, self.embedder = rec, policy, embedder
        self.items: list[Item] = []
        self.views: list[tuple[int, float, float]] = []
        self.calls: list[Call] = []
        self.vectors: npt.NDArray[np.float32] | None = None

    def add_content(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self.vectors = self.embedder.embed([i.text for i in items])

    def observe(self, item_id: int, watch_fraction: float, timestamp: float) -> None:
        self.views.append((item_id, watch_fraction, timestamp))

    def recommend(self, k: int, timestamp: float) -> Sequence[int]:
        self.calls.append(Call(len(self.views), timestamp))
        return list(self.policy(self, k, timestamp))

    def close(self) -> None:
        self.rec.closed += 1
        self.rec.catalogs.append([i.id for i in self.items])
        self.rec.views.append(list(self.views))
        self.rec.calls.append(list(self.calls))


def factory_of(rec: Recorder, policy: Policy) -> Callable[[Path, Embedder], BrainSession]:
    def factory(folder: Path, embedder: Embedder) -> BrainSession:
        return StandIn(folder, embedder, rec, policy)

    return factory


def content_policy(brain: StandIn, k: int, timestamp: float) -> Sequence[int]:
    """Cosine to the last view's embedding, watched titles skipped: a local-only scorer."""
    assert brain.vectors is not None
    if not brain.views:
        return [i.id for i in brain.items[:k]]
    pos = {i.id: p for p, i in enumerate(brain.items)}
    seen = {v[0] for v in brain.views}
    scores = brain.vectors @ brain.vectors[pos[brain.views[-1][0]]]
    order = [p for p in np.argsort(-scores, kind="stable") if brain.items[p].id not in seen]
    return [brain.items[p].id for p in order[:k]]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    world = make_world()
    root = tmp_path_factory.mktemp("movielens")
    return {
        "ml-latest": write_ml_latest(root / "ml-latest-small", world),
        "ml-100k": write_ml100k(root / "ml-100k", world),
    }


def _run(data: Path, tmp_path: Path, factory: Callable[[Path, Embedder], BrainSession] | None,
         embedder: Embedder | None = None, **kw: object) -> QualityReport:  # fmt: skip
    return run_quality(
        data,
        brain_factory=factory,
        embedder=embedder or HashEmbedder(),
        progress=False,
        settings=kw.pop("settings", FAST),  # type: ignore[arg-type]
        cache_dir=tmp_path / "cache",
        work_dir=tmp_path / "work",
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("history", ["train", "all"])
def test_each_user_replays_only_the_history_of_its_test_item(
    folders: dict[str, Path], tmp_path: Path, history: str
) -> None:
    data_dir = folders["ml-latest"]
    (tmp_path / "work").mkdir()
    rec = Recorder()
    report = _run(data_dir, tmp_path, factory_of(rec, content_policy),
                  settings=replace(FAST, history=history))
    data = load_movielens(data_dir)
    split = split_leave_last(data)
    assert [m.name for m in report.methods] == ["brain", *BASELINES]
    assert report.history == history
    assert report.evaluated_users == len(split.users) == rec.closed
    assert len(set(rec.folders)) == len(split.users)
    assert not any((tmp_path / "work").iterdir()), "brain folders are removed"
    catalog = [i.id for i in data.items]
    for user, views, calls, cat in zip(split.users, rec.views, rec.calls, rec.catalogs,
                                       strict=True):  # fmt: skip
        assert cat == catalog
        ids = [data.items[i].id for i in user.items]
        # A: the training history; B: training + validation item. In time order, plus
        # (for a 6-view user in A) the validation item the cold-start slice needs.
        n_train = len(user.train) if history == "train" else len(user.items) - 1
        replayed = max(n_train, COLD_HISTORY)
        assert [v[0] for v in views] == ids[:replayed]
        assert [v[1] for v in views] == user.fractions[:replayed].tolist()
        assert [v[2] for v in views] == user.timestamps[:replayed].tolist()
        assert ids[-1] not in [v[0] for v in views], "the test item is never replayed"
        asked = {(c.seen, c.timestamp) for c in calls}
        assert (n_train, float(user.timestamps[-1])) in asked
        assert (COLD_HISTORY, float(user.timestamps[COLD_HISTORY])) in asked
        assert len(calls) == 2
    brain = report.method("brain")
    assert brain.test.users == len(split.users)
    assert brain.cold is not None and brain.cold.users == len(split.cold_users())
    assert report.brain is not None
    assert report.brain["embed_misses"] == 0  # every catalog text came from the shared matrix
    assert report.brain["embed_hits"] == len(split.users) * data.n_items


def test_an_oracle_brain_scores_one_and_beats_every_baseline(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    data = load_movielens(folders["ml-100k"])
    by_time: dict[float, int] = {}
    for u, i, ts in zip(data.users, data.item_index, data.timestamps, strict=True):
        by_time[float(ts)] = data.items[int(i)].id  # timestamps are unique per view here
        del u

    def oracle(brain: StandIn, k: int, timestamp: float) -> Sequence[int]:
        return [by_time[timestamp]]

    report = _run(folders["ml-100k"], tmp_path, factory_of(Recorder(), oracle))
    brain = report.method("brain")
    assert (brain.test.hr, brain.test.ndcg) == (1.0, 1.0)
    assert brain.cold is not None and (brain.cold.hr, brain.cold.ndcg) == (1.0, 1.0)
    assert report.reference == "brain"
    versus = {(c.other, c.slice, c.metric): c.diff for c in report.comparisons}
    assert len(versus) == len(BASELINES) * 4
    for name in BASELINES:
        d = versus[(name, "test", "HR")]
        assert d.diff == pytest.approx(1.0 - report.method(name).test.hr)
        assert d.diff >= 0
    # The cluster sequences are easy for EASE; popularity is far from perfect.
    assert versus[("most popular", "test", "HR")].significant


def test_watched_and_unknown_ids_are_dropped_and_counted(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    def sloppy(brain: StandIn, k: int, timestamp: float) -> Sequence[int]:
        watched = brain.views[0][0]
        fresh = [i.id for i in brain.items if i.id not in {v[0] for v in brain.views}]
        return [watched, 424242, fresh[0], fresh[0], *fresh[1:k]]

    settings = dataclasses.replace(FAST, max_users=5, cold_folds=2)
    report = _run(folders["ml-latest"], tmp_path, factory_of(Recorder(), sloppy),
                  settings=settings)  # fmt: skip
    assert report.evaluated_users == 5
    assert report.brain is not None
    calls = 5 + report.cold_users
    assert report.brain["foreign_ids"] == calls
    assert report.brain["watched_items"] == calls


def test_both_layouts_give_the_same_figures(folders: dict[str, Path], tmp_path: Path) -> None:
    a = _run(folders["ml-latest"], tmp_path / "a", None)
    b = _run(folders["ml-100k"], tmp_path / "b", None)
    assert (a.layout, b.layout) == ("ml-latest", "ml-100k")
    assert a.reference == "EASE + recency"  # no brain: the strongest baseline is the reference
    for ma, mb in zip(a.methods, b.methods, strict=True):
        assert ma.name == mb.name
        assert ma.params == mb.params
        assert np.array_equal(ma.test.hits, mb.test.hits), ma.name
        assert ma.cold is not None and mb.cold is not None
        assert np.array_equal(ma.cold.ndcgs, mb.cold.ndcgs), ma.name
    # The synthetic users follow cluster sequences: EASE must find that signal.
    assert a.method("EASE").test.hr > a.method("most popular").test.hr


class CountingEmbedder:
    def __init__(self) -> None:
        self.inner = HashEmbedder()
        self.texts = 0
        self.model_id = self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_catalog_embeddings_are_cached_by_texts_and_model(tmp_path: Path) -> None:
    texts = ["Heat (1995). Genres: Action, Crime, Thriller", "Babylon 5. Genres: Sci-Fi"]
    first = CountingEmbedder()
    vecs, cached = catalog_embeddings(texts, first, tmp_path)
    assert not cached and first.texts == 1 + len(texts)  # the probe, then the catalog
    again = CountingEmbedder()
    vecs2, cached2 = catalog_embeddings(texts, again, tmp_path)
    assert cached2 and again.texts == 1
    np.testing.assert_array_equal(vecs, vecs2)
    _, cached3 = catalog_embeddings([*texts, "Hyena Road"], CountingEmbedder(), tmp_path)
    assert not cached3, "a changed catalog is a miss"
    _, cached4 = catalog_embeddings(texts, HashEmbedder(dim=64), tmp_path)
    assert not cached4, "another model is a miss"


def test_shared_embedder_serves_the_catalog_and_remembers_other_texts() -> None:
    inner = CountingEmbedder()
    texts = ["a b", "c d"]
    shared = SharedEmbedder(inner, texts, inner.inner.embed(texts))
    out = shared.embed(["c d", "new text", "a b", "new text"])
    np.testing.assert_array_equal(out[0], inner.inner.embed(["c d"])[0])
    np.testing.assert_array_equal(out[1], out[3])
    assert (shared.hits, shared.misses, inner.texts) == (2, 2, 2)
    shared.embed(["new text"])
    assert (shared.hits, inner.texts) == (3, 2)
    with pytest.raises(ValueError, match="vectors"):
        SharedEmbedder(inner, ["x"], np.zeros((2, inner.dim), dtype=np.float32))


def test_the_real_brain_runs_through_the_adapter(folders: dict[str, Path], tmp_path: Path) -> None:
    settings = dataclasses.replace(FAST, max_users=4, cold_folds=2)
    report = _run(folders["ml-latest"], tmp_path, local_brain_factory(), settings=settings)
    brain = report.method("brain")
    assert report.brain is not None
    assert report.brain["foreign_ids"] == 0 and report.brain["watched_items"] == 0
    assert brain.test.users == 4
    assert brain.test.coverage > 0, "the brain returned recommendations"
    assert report.brain["embed_misses"] <= 1  # the brain's own probe text at most
    # The catalog is stored once (a template the users' brains copy), not per user.
    n_items = load_movielens(folders["ml-latest"]).n_items
    assert report.brain["embed_hits"] < 2 * n_items
    assert not any((tmp_path / "work").iterdir()), "template and brain folders are removed"


def test_report_prints_as_text_and_json(folders: dict[str, Path], tmp_path: Path) -> None:
    report = _run(folders["ml-latest"], tmp_path, factory_of(Recorder(), content_policy),
                  cold_start=False)  # fmt: skip
    assert all(m.cold is None for m in report.methods)
    text = format_text(report)
    for name in ["brain", *BASELINES]:
        assert name in text
    assert "HR@10" in text and "±" in text and "brain − baseline" in text
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["data"]["layout"] == "ml-latest"
    assert [m["name"] for m in doc["methods"]] == ["brain", *BASELINES]
    assert doc["methods"][1]["test"]["hr"] == pytest.approx(report.methods[1].test.hr, abs=1e-5)
    assert {c["slice"] for c in doc["comparisons"]} == {"test"}


def test_command_line_prints_json_and_refuses_bad_folders(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--brain", "none", "--embedder", "hash", "--no-progress", "--json",
            "--cache-dir", str(tmp_path / "cache"), "--max-users", "6"]  # fmt: skip
    assert main(["--data", str(folders["ml-100k"]), *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"]["evaluated_users"] == 6
    assert doc["reference"] == "EASE + recency"
    assert main(["--data", str(tmp_path / "nothing-here"), *args]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--data", str(folders["ml-100k"]), *args[:-2], "--max-users", "-1"]) == 2
    assert "max_users" in capsys.readouterr().err


def test_settings_are_validated() -> None:
    with pytest.raises(SettingError, match="k"):
        QualitySettings(k=0)
    with pytest.raises(SettingError, match="ease_lambdas"):
        QualitySettings(ease_lambdas=(0.0,))
    with pytest.raises(SettingError, match="cold_folds"):
        QualitySettings(cold_folds=1)


def test_crowd_fed_rows_are_labelled_and_use_the_crowd(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    report = _run(folders["ml-latest"], tmp_path, local_brain_factory(), crowd_variants=True)
    names = [m.name for m in report.methods]
    assert names == ["brain", CROWD_POPULARITY, CROWD_LISTS, *BASELINES]
    assert all("[crowd]" in n for n in names[1:3])
    brain, pop, lists = (report.method(n) for n in names[:3])
    assert brain.cold is not None and pop.cold is None and lists.cold is None
    # The crowd's knowledge reached the brains: it reorders their lists.
    assert not np.array_equal(pop.test.ndcgs, brain.test.ndcgs)
    assert not np.array_equal(lists.test.ndcgs, brain.test.ndcgs)
    text = format_text(report)
    assert "no crowd knowledge" in text and "[crowd]: the brain also given" in text
    assert {c.other for c in report.comparisons} >= {CROWD_POPULARITY, CROWD_LISTS}


# -- held-out positions ----------------------------------------------------------------------

TUNING_FROM_END = {1, 2, 3, 4}  # items[-1] test, items[-2..-4] tuning targets
COLD_TARGETS = {COLD_HISTORY - 1, COLD_HISTORY}  # cold validation (4 -> 5th), cold test (5 -> 6th)


def test_held_out_positions_are_two_steps_ahead_and_never_a_tuning_target() -> None:
    assert held_out_positions(20, 10) == [(20 - b - 1, 20 - b) for b in range(5, 15)]
    assert held_out_positions(20, 3) == [(14, 15), (13, 14), (12, 13)]
    # The shortest user with a case: 11 views, history items[:5], target items[6].
    assert held_out_positions(11, 10) == [(5, 6)]
    assert held_out_positions(10, 10) == []
    assert held_out_positions(3, 10) == []
    assert held_out_positions(30, 0) == []
    for n_views in range(0, 40):
        for positions in (0, 1, 2, 10, 25):
            cases = held_out_positions(n_views, positions)
            assert len(cases) == max(0, min(positions, n_views - 10))
            assert len({t for _, t in cases}) == len(cases)
            for seen, target in cases:
                back = n_views - target
                assert 5 <= back <= 4 + positions
                assert seen == target - 1, "the view just before the target is not seen"
                assert seen >= 5
                assert back not in TUNING_FROM_END
                assert target not in COLD_TARGETS


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users of 6-17 views: some have held-out cases, some are too short."""
    world = make_world(n_users=24, per_cluster=16, seed=1)
    return write_ml_latest(tmp_path_factory.mktemp("long") / "ml-latest-small", world)


def _oracle_of(data_dir: Path) -> Policy:
    data = load_movielens(data_dir)
    by_time = {
        float(ts): data.items[int(i)].id
        for i, ts in zip(data.item_index, data.timestamps, strict=True)
    }  # timestamps are unique per view here

    def oracle(brain: StandIn, k: int, timestamp: float) -> Sequence[int]:
        return [by_time[timestamp]]

    return oracle


def test_held_out_cases_are_asked_in_the_same_replay_and_scored_against_content(
    long_folder: Path, tmp_path: Path
) -> None:
    rec = Recorder()
    report = _run(long_folder, tmp_path, factory_of(rec, _oracle_of(long_folder)))
    split = split_leave_last(load_movielens(long_folder))
    expected = [held_out_positions(len(u.items), 10) for u in split.users]
    n_cases = sum(len(c) for c in expected)
    assert n_cases > 0
    assert 0 < sum(1 for c in expected if c) < len(split.users), "some users are too short"
    for user, cases, views, calls in zip(split.users, expected, rec.views, rec.calls,
                                         strict=True):  # fmt: skip
        # One replay: the views are the test item's history (B: training + validation),
        # as without held-out cases.
        assert len(views) == len(user.items) - 1
        asked = [(c.seen, c.timestamp) for c in calls]
        assert len(asked) == 1 + int(user.has_cold) + len(cases)
        for seen, target in cases:
            assert (seen, float(user.timestamps[target])) in asked
    h = report.held_out
    assert h is not None
    assert (h.positions, h.cases, h.users) == (10, n_cases, sum(1 for c in expected if c))
    assert len(h.brain.hits) == len(h.content.hits) == n_cases
    # The oracle names each target: the brain's lists are matched to the right cases.
    assert (h.brain.hr, h.brain.ndcg) == (1.0, 1.0)
    # The content baseline, rebuilt by hand with its tuned parameters on the same cases.
    content = report.method("content")
    assert h.content_params == content.params
    vectors, _ = catalog_embeddings(load_movielens(long_folder).texts(), HashEmbedder(),
                                    tmp_path / "cache")  # fmt: skip
    scorer = ContentProfile(vectors, int(content.params["last_n"]), float(content.params["decay"]))
    histories = [u.items[:s] for u, cs in zip(split.users, expected, strict=True) for s, _ in cs]
    targets = [int(u.items[t]) for u, cs in zip(split.users, expected, strict=True) for _, t in cs]
    hits, _ = hit_ndcg(rank(scorer, histories, 10), targets)
    np.testing.assert_array_equal(h.content.hits, hits)
    assert h.content.hr < 1.0
    # Paired by user: each user's cases averaged first, then the mean over users.
    starts = np.cumsum([0, *map(len, expected)])[:-1]
    per_user = [1.0 - float(np.mean(hits[lo : lo + len(c)]))
                for lo, c in zip(starts, expected, strict=True) if c]  # fmt: skip
    assert h.hr.n == h.users
    assert h.hr.diff == pytest.approx(float(np.mean(per_user)))
    assert h.hr.low < h.hr.diff < h.hr.high
    # Only content: the collaborative baselines are not scored on these cases.
    doc = json.loads(json.dumps(report.to_dict()))["held_out"]
    assert set(doc) >= {"brain", "content", "brain_minus_content", "cases", "users"}
    assert not {"EASE", "item-kNN", "most popular"} & set(doc)


def test_held_out_lists_leave_the_test_and_cold_lists_of_the_real_brain_alone(
    long_folder: Path, tmp_path: Path
) -> None:
    on = dataclasses.replace(FAST, max_users=4, cold_folds=2)
    off = dataclasses.replace(on, held_out_positions=0)
    a = _run(long_folder, tmp_path / "on", local_brain_factory(), settings=on)
    b = _run(long_folder, tmp_path / "off", local_brain_factory(), settings=off)
    assert a.held_out is not None and a.held_out.cases > 0 and b.held_out is None
    assert a.brain is not None and a.brain["watched_items"] == a.brain["foreign_ids"] == 0
    for name in ("brain", "content"):
        ma, mb = a.method(name), b.method(name)
        np.testing.assert_array_equal(ma.test.ndcgs, mb.test.ndcgs)
        assert ma.cold is not None and mb.cold is not None
        np.testing.assert_array_equal(ma.cold.ndcgs, mb.cold.ndcgs)
    assert [c.to_dict() for c in a.comparisons] == [c.to_dict() for c in b.comparisons]


def test_held_out_slice_is_printed_and_in_json_with_consistent_counts(
    long_folder: Path, tmp_path: Path
) -> None:
    report = _run(long_folder, tmp_path, factory_of(Recorder(), content_policy))
    h = report.held_out
    assert h is not None and h.cases > h.users > 0
    text = format_text(report)
    assert "Held-out positions" in text
    assert f"{h.cases} cases from {h.users} users" in text
    assert "clustered by user" in text and "content + popularity are not scored here" in text
    assert f"HR@10 {h.brain.hr:.3f}" in text and f"HR@10 {h.content.hr:.3f}" in text
    test_hr = next(c.diff for c in report.comparisons
                   if (c.other, c.slice, c.metric) == ("content", "test", "HR"))  # fmt: skip
    assert f"test item, one case per user ({report.evaluated_users} users)" in text
    assert f"HR {test_hr.diff:+.3f} [{test_hr.low:+.3f}, {test_hr.high:+.3f}]" in text
    doc = json.loads(json.dumps(report.to_dict()))["held_out"]
    assert (doc["cases"], doc["users"], doc["positions"]) == (h.cases, h.users, 10)
    hr = doc["brain_minus_content"]["HR"]
    assert hr["users"] == h.users
    assert hr["diff"] == pytest.approx(h.hr.diff, abs=1e-5)
    assert hr["ci95"] == pytest.approx([h.hr.low, h.hr.high], abs=1e-5)
    assert hr["excludes_0"] == h.hr.significant
    assert doc["brain"]["hr"] == pytest.approx(h.brain.hr, abs=1e-5)
    assert doc["content"]["params"] == report.method("content").params


def test_held_out_positions_zero_turns_it_off(
    long_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data", str(long_folder), "--brain", "local", "--embedder", "hash",
            "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--max-users", "3",
            "--work-dir", str(tmp_path / "work")]  # fmt: skip
    assert main([*args, "--json", "--held-out-positions", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["held_out"] is None
    assert main([*args, "--held-out-positions", "0"]) == 0
    assert "Held-out positions" not in capsys.readouterr().out
    assert main([*args, "--json", "--held-out-positions", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)["held_out"]
    assert doc is not None and doc["positions"] == 2 and doc["cases"] > 0
    assert main([*args, "--held-out-positions", "-1"]) == 2
    assert "held_out_positions" in capsys.readouterr().err


def test_held_out_reports_no_case_when_every_user_is_short(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    # The default world's users have at most 9 views: no held-out case.
    report = _run(folders["ml-latest"], tmp_path, factory_of(Recorder(), content_policy))
    assert report.held_out is not None and report.held_out.cases == 0
    assert "no case: a user needs at least 11 views" in format_text(report)
    assert json.loads(json.dumps(report.to_dict()))["held_out"]["cases"] == 0
