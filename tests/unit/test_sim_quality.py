"""The quality runner end to end on synthetic MovieLens data, with stand-in and real brains."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from omega.brain.embedder import HashEmbedder
from omega.schema import SettingError
from omega.sim.movielens import COLD_HISTORY, Item, load_movielens, split_leave_last
from omega.sim.quality import (
    CROWD_LISTS,
    CROWD_POPULARITY,
    BrainSession,
    Embedder,
    QualityReport,
    QualitySettings,
    SharedEmbedder,
    catalog_embeddings,
    format_text,
    local_brain_factory,
    main,
    run_quality,
)
from tests.helpers_sim import make_world, write_ml100k, write_ml_latest

BASELINES = [
    "most popular", "item-kNN", "EASE", "EASE + recency", "content", "content + popularity",
]  # fmt: skip
# Small grids keep the runs fast; the protocol does not depend on them.
FAST = QualitySettings(
    ease_lambdas=(5.0, 50.0), knn_neighbours=(5, 10), content_last_n=(1, 3),
    content_popularity=(0.2,), cold_folds=4,
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


def test_each_user_replays_only_its_training_history(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = folders["ml-latest"]
    (tmp_path / "work").mkdir()
    rec = Recorder()
    report = _run(data_dir, tmp_path, factory_of(rec, content_policy))
    data = load_movielens(data_dir)
    split = split_leave_last(data)
    assert [m.name for m in report.methods] == ["brain", *BASELINES]
    assert report.evaluated_users == len(split.users) == rec.closed
    assert len(set(rec.folders)) == len(split.users)
    assert not any((tmp_path / "work").iterdir()), "brain folders are removed"
    catalog = [i.id for i in data.items]
    for user, views, calls, cat in zip(split.users, rec.views, rec.calls, rec.catalogs,
                                       strict=True):  # fmt: skip
        assert cat == catalog
        ids = [data.items[i].id for i in user.items]
        n_train = len(user.train)
        # Replayed: the training history in time order, plus (for a 6-view user) the
        # validation item that the cold-start slice needs as its 5th view.
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
