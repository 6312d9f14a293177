"""The public API (omega.Brain) on real LMDB files, with the hash embedder for speed.

Tests marked ``model`` load the real ONNX model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import lmdb
import numpy as np
import pytest

from omega import Brain, Content, Recommendation, ViewingEvent
from omega.brain.embedder import HashEmbedder
from omega.brain.errors import (
    BadInput,
    BrainClosed,
    CorruptDataDir,
    DataDirLocked,
    InvalidContent,
    InvalidCrowdUpdate,
    InvalidEvent,
    OutOfOrderEvent,
    SchemaVersionMismatch,
    StaleCrowdVersion,
    UnknownContent,
)
from omega.brain.settings import BrainSettings, RecommenderSettings
from omega.errors import BrainError
from omega.schema import SettingError, load

T0 = 1_700_000_000
FAST = BrainSettings(durability="nosync")

CATALOG = [
    Content(id="heat", title="Heat", year=1995, genres=("Action", "Crime", "Thriller")),
    Content(id="casino", title="Casino", year=1995, genres=("Crime", "Drama")),
    Content(id="godfather", title="The Godfather", year=1972, genres=("Crime", "Drama")),
    Content(id="toy1", title="Toy Story", year=1995, genres=("Animation", "Children", "Comedy")),
    Content(id="toy2", title="Toy Story 2", year=1999, genres=("Animation", "Children", "Comedy")),
    Content(id="nemo", title="Finding Nemo", year=2003, genres=("Animation", "Children")),
    Content(id="alien", title="Alien", year=1979, genres=("Horror", "Sci-Fi")),
    Content(id="aliens", title="Aliens", year=1986, genres=("Action", "Horror", "Sci-Fi")),
]


def open_brain(path: Path, settings: BrainSettings = FAST) -> Brain:
    return Brain.open(path, settings, embedder=HashEmbedder())


@pytest.fixture
def brain(tmp_path: Path) -> Iterator[Brain]:
    b = open_brain(tmp_path / "tv")
    b.add_content(CATALOG)
    yield b
    b.close()


def ids(recs: Sequence[Recommendation]) -> list[str]:
    return [r.content_id for r in recs]


def view(cid: str, t: float, fraction: float = 0.95) -> ViewingEvent:
    return ViewingEvent(content_id=cid, watch_fraction=fraction, timestamp=t)


# -- the happy path -------------------------------------------------------------------------


def test_observe_then_recommend_similar_unwatched_titles_with_reasons(brain: Brain) -> None:
    assert brain.observe(view("toy1", T0)) == 1
    assert brain.observe(view("heat", T0 + 10, 0.2)) == 2
    assert brain.observe(view("toy2", T0 + 20)) == 3
    recs = brain.recommend(k=5, timestamp=T0 + 30)
    assert len(recs) == 5
    assert not {"toy1", "toy2", "heat"} & set(ids(recs))
    assert recs[0].content_id == "nemo"
    assert recs[0].source == "similar" and recs[0].reason.startswith("similar to Toy Story")
    assert all(r.reason for r in recs)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True) or \
        brain.settings.recommender.mmr_lambda < 1
    assert brain.history(2) == [view("toy2", T0 + 20), view("heat", T0 + 10, 0.2)]


def test_an_empty_brain_still_answers(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        assert b.recommend(k=3, timestamp=T0) == []
        b.add_content(CATALOG)
        recs = b.recommend(k=3, timestamp=T0)
        # Nothing known: the most recently added titles, said so.
        assert ids(recs) == ["aliens", "alien", "nemo"]
        assert {r.reason for r in recs} == {"new in your catalog"}


def test_catalog_popularity_orders_a_cold_start(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        b.add_content([replace(c, metadata={"popularity": i}) for i, c in enumerate(CATALOG)])
        recs = b.recommend(k=2, timestamp=T0)
        assert recs[0].content_id == "aliens"
        assert {r.reason for r in recs} == {"popular now"}


def test_everything_watched_gives_an_empty_list(brain: Brain) -> None:
    for i, c in enumerate(CATALOG):
        brain.observe(view(c.id, T0 + i))
    assert brain.recommend(k=5, timestamp=T0 + 100) == []


def test_status_counts(brain: Brain) -> None:
    brain.observe(view("heat", T0))
    s = brain.status()
    assert (s["catalog"], s["episodes"], s["watched_titles"], s["patterns"]) == (8, 1, 1, 1)
    assert s["schema"] == "omega-brain/1" and s["durability"] == "nosync"
    assert s["embedder"] == "HashEmbedder" and s["dim"] == 384


def test_recent_titles_and_coview_pairs(brain: Brain) -> None:
    for i, cid in enumerate(["heat", "casino", "heat", "alien"]):
        brain.observe(view(cid, T0 + i))
    assert brain.recent_titles(2) == ["alien", "heat"]
    assert brain.coview_pairs(3) == [("alien", "casino"), ("alien", "heat"), ("casino", "heat")]
    with pytest.raises(BadInput):
        brain.recent_titles(0)


def test_sync_state_and_outbound_queue_survive_a_reopen(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        assert b.sync_state("version") is None
        b.set_sync_state("version", b"12")
        assert [b.enqueue_outbound(p) for p in (b"r1", b"r2", b"r3")] == [1, 2, 3]
        assert b.ack_outbound(1) == 1
        with pytest.raises(BadInput):
            b.enqueue_outbound(b"")
        with pytest.raises(BadInput):
            b.set_sync_state("", b"x")
    with open_brain(tmp_path / "tv") as b:
        assert b.sync_state("version") == b"12"
        assert b.peek_outbound() == [(2, b"r2"), (3, b"r3")]


def test_consolidate_fills_the_reasoning_bank(brain: Brain) -> None:
    for i, c in enumerate(CATALOG):
        brain.observe(view(c.id, T0 + i))
    n = brain.consolidate(threshold=0.5)
    assert 1 <= n <= 8
    assert brain.status()["consolidated"] == n


# -- the catalog ------------------------------------------------------------------------------


def test_duplicate_ids_update_and_identical_resends_are_unchanged(brain: Brain) -> None:
    assert brain.add_content(CATALOG[:2]).unchanged == 2
    result = brain.add_content([
        replace(CATALOG[0], title="Heat (director's cut)"),
        replace(CATALOG[1], metadata={"popularity": 5}),
        Content(id="new", title="New"), Content(id="new", title="Newer"),
    ])
    assert (result.added, result.updated, result.unchanged) == (1, 2, 0)
    brain.observe(view("casino", T0))
    brain.apply_crowd({"casino": [("heat", 1.0)]}, {}, [], 1)
    top = brain.recommend(k=1, timestamp=T0)[0]
    assert top.content_id == "heat"
    assert brain.status()["catalog"] == 9
    assert brain.history(1)[0].content_id == "casino"


def test_changed_text_is_embedded_again(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        b.add_content([Content(id="x", title="Toy Story Returns"),
                       Content(id="y", title="Toy Story")])
        b.observe(view("y", T0))
        before = b.recommend(k=1, timestamp=T0)[0]
        assert before.reason == "similar to Toy Story"
        b.add_content([Content(id="x", title="Toy Story 2")])
        score_after = b.recommend(k=1, timestamp=T0)[0].score
        assert score_after != pytest.approx(before.score)
    with open_brain(tmp_path / "tv") as b:  # and it is stored
        assert b.recommend(k=1, timestamp=T0)[0].score == pytest.approx(score_after)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"id": "", "title": "x"}, "id"),
    ({"id": "a\nb", "title": "x"}, "id"),
    ({"id": "a", "title": "   "}, "title"),
    ({"id": "a", "title": "x" * 501}, "title"),
    ({"id": "a", "title": "x", "year": 99}, "year"),
    ({"id": "a", "title": "x", "genres": "Drama"}, "genres"),
    ({"id": "a", "title": "x", "duration_min": math.nan}, "duration_min"),
    ({"id": "a", "title": "x", "metadata": {"popularity": -1}}, "metadata.popularity"),
    ({"id": "a", "title": "x", "metadata": {"rating": math.inf}}, "metadata.rating"),
    ({"id": "a", "title": "x", "metadata": {"tags": ["a"]}}, "metadata.tags"),
])
def test_bad_content_is_refused_on_construction(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidContent) as info:
        Content(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, BrainError)


def test_a_bad_item_in_a_batch_writes_nothing(brain: Brain) -> None:
    with pytest.raises(InvalidContent):
        brain.add_content([Content(id="fine", title="Fine"), "not content"])  # type: ignore[list-item]
    assert brain.status()["catalog"] == 8
    with pytest.raises(UnknownContent):
        brain.observe(view("fine", T0))


def test_the_catalog_cap_is_enforced(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv", replace(FAST, max_catalog_items=3)) as b:
        with pytest.raises(InvalidContent, match="max_catalog_items"):
            b.add_content(CATALOG[:4])
        assert b.status()["catalog"] == 0


# -- bad events ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [-0.01, 1.01, math.nan, math.inf, True, "0.5"])
def test_bad_watch_fractions_are_refused(brain: Brain, fraction: object) -> None:
    with pytest.raises(InvalidEvent) as info:
        brain.observe(ViewingEvent("heat", fraction, T0))  # type: ignore[arg-type]
    assert info.value.field == "watch_fraction"
    assert brain.status()["episodes"] == 0


@pytest.mark.parametrize("stamp", [math.nan, -1.0, 1.7e12, None])
def test_bad_timestamps_are_refused(brain: Brain, stamp: object) -> None:
    with pytest.raises(InvalidEvent):
        brain.observe(ViewingEvent("heat", 0.5, stamp))  # type: ignore[arg-type]


def test_bad_contexts_and_non_events_are_refused(brain: Brain) -> None:
    with pytest.raises(InvalidEvent):
        brain.observe(ViewingEvent("heat", 0.5, T0, {"daypart": 3}))  # type: ignore[dict-item]
    with pytest.raises(InvalidEvent):
        brain.observe({"content_id": "heat"})  # type: ignore[arg-type]


def test_unknown_content_is_refused_and_nothing_is_written(brain: Brain) -> None:
    with pytest.raises(UnknownContent) as info:
        brain.observe(view("nope", T0))
    assert info.value.content_id == "nope"
    assert brain.status()["episodes"] == 0 and brain.status()["patterns"] == 0


def test_events_older_than_the_tolerance_are_refused(brain: Brain) -> None:
    brain.observe(view("heat", T0))
    brain.observe(view("casino", T0 - 299))  # within the 300 s tolerance
    with pytest.raises(OutOfOrderEvent) as info:
        brain.observe(view("alien", T0 - 301))
    assert info.value.last_timestamp == T0
    assert [e.content_id for e in brain.history(5)] == ["casino", "heat"]
    # The clock only moves forward: the late event did not pull it back.
    with pytest.raises(OutOfOrderEvent):
        brain.observe(view("alien", T0 - 350))


def test_recommend_refuses_bad_arguments(brain: Brain) -> None:
    for k in (0, -1, 201, True, 2.5):
        with pytest.raises(BadInput):
            brain.recommend(k=k, timestamp=T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        brain.recommend(k=3, timestamp=math.nan)


# -- the crowd ----------------------------------------------------------------------------


def test_crowd_neighbours_lead_with_a_reason_naming_the_title(brain: Brain) -> None:
    brain.observe(view("heat", T0))
    brain.observe(view("toy1", T0 + 1, 0.3))
    brain.apply_crowd({"heat": [("nemo", 0.9), ("casino", 0.2)], "unknown": [("x", 1.0)]},
                      {}, [], version=3)
    recs = brain.recommend(k=3, timestamp=T0 + 2)
    assert recs[0].content_id == "nemo"
    assert (recs[0].source, recs[0].reason) == ("crowd", "because you finished Heat")
    brain.apply_crowd({"toy1": [("alien", 5.0)], "heat": []}, {}, [], version=4)
    top = brain.recommend(k=1, timestamp=T0 + 2)[0]
    assert (top.content_id, top.reason) == ("alien", "because you watched Toy Story")
    assert brain.status()["crowd_version"] == 4


def test_trends_and_popularity_from_the_crowd(tmp_path: Path) -> None:
    settings = replace(FAST, recommender=RecommenderSettings(popularity=1.0, trend=2.0))
    with open_brain(tmp_path / "tv", settings) as b:
        b.add_content(CATALOG)
        b.apply_crowd({}, {"godfather": 100.0, "heat": 10.0}, [("alien", 3.0)], version=1)
        recs = b.recommend(k=3, timestamp=T0)
        assert ids(recs)[:2] == ["alien", "godfather"]
        assert [r.reason for r in recs[:2]] == ["trending in your region", "popular now"]


@pytest.mark.parametrize(("neighbours", "popularity", "trends"), [
    ({"heat": [("nemo", math.nan)]}, {}, []),
    ({"heat": [("nemo",)]}, {}, []),
    ({"heat": "nemo"}, {}, []),
    ({"": [("nemo", 1.0)]}, {}, []),
    ({"heat": [("nemo", 1.0)] * 201}, {}, []),
    ({}, {"heat": -1.0}, []),
    ({}, {}, [("heat", math.inf)]),
    ({}, {}, "heat"),
])
def test_malformed_crowd_updates_change_nothing(brain: Brain, neighbours: object,
                                                popularity: object, trends: object) -> None:
    brain.apply_crowd({"heat": [("casino", 1.0)]}, {}, [], version=1)
    with pytest.raises(InvalidCrowdUpdate):
        brain.apply_crowd(neighbours, popularity, trends, version=2)  # type: ignore[arg-type]
    assert brain.status()["crowd_version"] == 1


def test_an_older_crowd_version_is_refused(brain: Brain) -> None:
    brain.apply_crowd({}, {}, [], version=5)
    brain.apply_crowd({}, {}, [], version=5)  # a retried pull is fine
    with pytest.raises(StaleCrowdVersion):
        brain.apply_crowd({}, {}, [], version=4)


# -- context ------------------------------------------------------------------------------


def test_context_weight_brings_the_daypart_genre_forward(tmp_path: Path) -> None:
    settings = replace(FAST, recommender=RecommenderSettings(content=0.0, context=1.0,
                                                             popularity=0.0, trend=0.0))
    with open_brain(tmp_path / "tv", settings) as b:
        b.add_content(CATALOG)
        evening = {"daypart": "evening"}
        b.observe(ViewingEvent("heat", 1.0, T0, evening))
        b.observe(ViewingEvent("casino", 1.0, T0 + 1, evening))
        b.observe(ViewingEvent("toy1", 1.0, T0 + 2, {"daypart": "morning"}))
        night = b.recommend(k=1, timestamp=T0 + 3, context=evening)[0]
        assert night.content_id == "godfather"
        assert night.reason == "you often enjoy Crime in the evening"
        morning = b.recommend(k=1, timestamp=T0 + 3, context={"daypart": "morning"})[0]
        assert morning.content_id in {"toy2", "nemo"}


# -- durability, reopening and damaged directories ---------------------------------------------


def test_reopen_restores_everything_and_ranks_the_same(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        b.add_content(CATALOG)
        for i, cid in enumerate(["heat", "toy1", "alien"]):
            b.observe(view(cid, T0 + i))
        b.apply_crowd({"alien": [("aliens", 1.0)]}, {"nemo": 2.0}, [], version=2)
        before = b.recommend(k=4, timestamp=T0 + 5)
        status = b.status()
    assert (tmp_path / "tv" / "index" / "stamp.json").exists()
    with open_brain(tmp_path / "tv") as b:
        assert b.recommend(k=4, timestamp=T0 + 5) == before
        assert {k: v for k, v in b.status().items() if k != "lmdb_used_bytes"} == \
            {k: v for k, v in status.items() if k != "lmdb_used_bytes"}
        with pytest.raises(OutOfOrderEvent):  # the last event time is remembered
            b.observe(view("nemo", T0 - 1000))
    # Without the saved indexes they are rebuilt from LMDB, to the same answers.
    (tmp_path / "tv" / "index" / "stamp.json").unlink()
    (tmp_path / "tv" / "index" / "patterns.index").write_bytes(b"junk")
    with open_brain(tmp_path / "tv") as b:
        assert b.recommend(k=4, timestamp=T0 + 5) == before
        assert b.status()["patterns"] == 3


def test_one_brain_per_directory(tmp_path: Path) -> None:
    b = open_brain(tmp_path / "tv")
    try:
        with pytest.raises(DataDirLocked):
            open_brain(tmp_path / "tv")
    finally:
        b.close()
    b.close()  # closing twice is harmless
    with pytest.raises(BrainClosed):
        b.recommend(k=1, timestamp=T0)
    with pytest.raises(BrainClosed):
        b.observe(view("heat", T0))
    open_brain(tmp_path / "tv").close()


def test_garbage_in_data_mdb_is_a_clear_error_and_releases_the_lock(tmp_path: Path) -> None:
    open_brain(tmp_path / "tv").close()
    (tmp_path / "tv" / "memory" / "data.mdb").write_bytes(b"\xde\xad\xbe\xef" * 10_000)
    for _ in range(2):  # the failed open released the directory
        with pytest.raises(CorruptDataDir):
            open_brain(tmp_path / "tv")


def test_a_wrong_schema_marker_is_a_clear_error(tmp_path: Path) -> None:
    open_brain(tmp_path / "tv").close()
    env = lmdb.open(str(tmp_path / "tv" / "memory"), max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(b"schema", b"omega-brain/0", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(SchemaVersionMismatch, match="omega-brain/0"):
        open_brain(tmp_path / "tv")


def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tv").write_text("not a directory")
    with pytest.raises(BrainError):
        open_brain(tmp_path / "tv")


class RotatedEmbedder(HashEmbedder):
    """Another model: same dimension, different vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.roll(super().embed(texts), 7, axis=1)


def test_a_new_model_re_embeds_the_catalog_and_drops_old_patterns(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv") as b:
        b.add_content(CATALOG)
        b.observe(view("toy1", T0))
        old = b.recommend(k=3, timestamp=T0)
    with Brain.open(tmp_path / "tv", FAST, embedder=RotatedEmbedder()) as b:
        assert b.status()["patterns"] == 0
        assert b.status()["episodes"] == 1
        # Rotating every vector keeps every cosine: same ranking, now in the new space.
        assert ids(b.recommend(k=3, timestamp=T0)) == ids(old)
        b.observe(view("heat", T0 + 1))
        assert b.status()["patterns"] == 1


def test_the_pattern_library_stays_within_capacity(tmp_path: Path) -> None:
    with open_brain(tmp_path / "tv", replace(FAST, pattern_capacity=3)) as b:
        b.add_content(CATALOG)
        for i, c in enumerate(CATALOG):
            b.observe(view(c.id, T0 + i, 0.95 if i % 2 else 0.1))
        assert b.status()["patterns"] == 3
    with open_brain(tmp_path / "tv", replace(FAST, pattern_capacity=3)) as b:
        assert b.status()["patterns"] == 3


def test_bulk_loaded_patterns_are_stored_and_capped(tmp_path: Path) -> None:
    settings = replace(FAST, pattern_capacity=5,
                       recommender=RecommenderSettings(pattern=1.0))
    rng = np.random.default_rng(1)
    with open_brain(tmp_path / "tv", settings) as b:
        b.add_content(CATALOG)
        keys = rng.standard_normal((8, 384)).astype(np.float32)
        held = b.load_patterns([(keys[i], CATALOG[i].id, float(i), 8, T0) for i in range(8)])
        assert held == 5
        with pytest.raises(UnknownContent):
            b.load_patterns([(keys[0], "nope", 1.0, 1, T0)])
        b.observe(view("heat", T0))
        assert len(b.recommend(k=3, timestamp=T0)) == 3  # the pattern pull runs
    with open_brain(tmp_path / "tv", settings) as b:
        # Full at five: the view's pattern pushed out the least valuable one.
        assert b.status()["patterns"] == 5


def test_large_catalogs_take_candidates_from_the_hnsw_index(tmp_path: Path) -> None:
    settings = replace(FAST, recommender=RecommenderSettings(full_scan_items=0))
    with open_brain(tmp_path / "tv", settings) as b:
        b.add_content(CATALOG)
        b.observe(view("toy1", T0))
        b.observe(view("toy2", T0 + 1))
        recs = b.recommend(k=3, timestamp=T0 + 2)
        assert recs[0].content_id == "nemo"
        assert not {"toy1", "toy2"} & set(ids(recs))
        b.add_content([Content(id="toy3", title="Toy Story 3", year=2010,
                               genres=("Animation", "Children", "Comedy"))])
        assert b.recommend(k=1, timestamp=T0 + 2)[0].content_id == "toy3"
    assert (tmp_path / "tv" / "index" / "catalog.index").exists()
    with open_brain(tmp_path / "tv", settings) as b:
        assert b.recommend(k=1, timestamp=T0 + 2)[0].content_id == "toy3"


# -- settings -----------------------------------------------------------------------------


def test_settings_load_from_a_table_and_name_bad_keys() -> None:
    s = load(BrainSettings, {"recency_decay": 0.8, "durability": "metasync",
                             "recommender": {"crowd": 2.0}, "index": {"m": 32}}, "brain")
    assert (s.recency_decay, s.durability, s.recommender.crowd, s.index.m) == \
        (0.8, "metasync", 2.0, 32)
    with pytest.raises(SettingError, match=r"brain\.recency_decay"):
        load(BrainSettings, {"recency_decay": 1.5}, "brain")
    with pytest.raises(SettingError, match=r"brain\.recommender\.mmr_lambda"):
        load(BrainSettings, {"recommender": {"mmr_lambda": 2}}, "brain")
    with pytest.raises(SettingError, match=r"brain\.durability"):
        load(BrainSettings, {"durability": "maybe"}, "brain")


# -- the real model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.mark.model
def test_with_the_real_model_sequels_follow_their_films(tmp_path: Path, model_cache: Path) -> None:
    settings = replace(FAST, model_cache_dir=model_cache)
    with Brain.open(tmp_path / "tv", settings) as b:  # the configured ONNX embedder
        assert b.status()["embedder"] == "OnnxEmbedder"
        b.add_content(CATALOG)
        b.observe(view("alien", T0))
        recs = b.recommend(k=2, timestamp=T0 + 1)
        assert recs[0].content_id == "aliens"
        assert recs[0].reason == "similar to Alien"


@pytest.mark.model
def test_with_the_real_model_a_reopen_does_not_re_embed(tmp_path: Path, model_cache: Path) -> None:
    settings = replace(FAST, model_cache_dir=model_cache)
    with Brain.open(tmp_path / "tv", settings) as b:
        b.add_content(CATALOG)
        b.observe(view("toy1", T0))
        before = b.recommend(k=3, timestamp=T0)
    with Brain.open(tmp_path / "tv", settings) as b:
        assert b.status()["patterns"] == 1  # kept: the probe matched the same model
        assert b.recommend(k=3, timestamp=T0) == before
