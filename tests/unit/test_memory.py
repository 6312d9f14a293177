"""omega.brain.memory on real LMDB files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import numpy as np
import pytest

from omega.brain.errors import CorruptDataDir, SchemaVersionMismatch, StorageFull
from omega.brain.memory import (
    SCHEMA,
    CatalogRecord,
    CrowdWrite,
    Episode,
    Memory,
    PatternRecord,
    ViewWrite,
)

MAP = 64 << 20


def rec(idx: int, cid: str) -> CatalogRecord:
    return CatalogRecord(idx=idx, content_id=cid, title=f"Title {cid}", genres=("Drama",),
                         description="", year=2001, duration_min=None,
                         metadata={"popularity": 3}, text_hash="h")


def view(seq: int, cid: str, *, put: tuple[PatternRecord, ...] = (),
         delete: tuple[int, ...] = ()) -> ViewWrite:
    return ViewWrite(
        episode=Episode(seq, cid, 0.9, 1000.0 + seq, {"daypart": "evening"} if seq == 1 else None),
        seen=(1, 1.0, 1000.0 + seq, 0.9), profile=np.full(4, seq, np.float32),
        profile_stats={"views": float(seq)}, patterns_put=put, patterns_delete=delete,
        next_pattern=10 + seq, counts={("evening", "drama"): (1.0, float(seq))})


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    m = Memory.open(tmp_path / "mem", map_size=MAP, durability="nosync")
    yield m
    m.close()


def test_a_new_environment_gets_the_schema_marker(mem: Memory) -> None:
    assert mem.meta()["schema"] == SCHEMA
    assert mem.episode_count() == 0 and mem.recent_episodes(5) == []


def test_catalog_round_trip_keeps_order_and_vectors(mem: Memory) -> None:
    vecs = np.eye(3, 4, dtype=np.float32)
    mem.write_catalog([(rec(0, "a"), vecs[0]), (rec(1, "b"), vecs[1])], {"catalog_gen": 1})
    mem.write_catalog([(rec(2, "c"), vecs[2])], {"catalog_gen": 2})
    loaded = list(mem.load_catalog())
    assert [r.content_id for r, _ in loaded] == ["a", "b", "c"]
    assert loaded[0][0] == rec(0, "a")
    np.testing.assert_array_equal(np.stack([v for _, v in loaded]), vecs)
    assert mem.meta()["catalog_gen"] == 2
    records, matrix = mem.load_catalog_arrays(4)
    assert [r.content_id for r in records] == ["a", "b", "c"]
    np.testing.assert_array_equal(matrix, vecs)
    with pytest.raises(CorruptDataDir, match="8-dimensional"):
        mem.load_catalog_arrays(8)


def test_a_view_writes_everything_it_changes(mem: Memory) -> None:
    pat = PatternRecord(5, "a", 1.0, 1, 1001.0, np.ones(4, np.float32) / 2)
    mem.write_view(view(1, "a", put=(pat,)))
    mem.write_view(view(2, "b", delete=(5,)))
    eps = mem.recent_episodes(10)
    assert [(e.seq, e.content_id) for e in eps] == [(2, "b"), (1, "a")]
    assert eps[1].context == {"daypart": "evening"} and eps[0].context is None
    assert [e.seq for e in mem.iter_episodes()] == [1, 2]
    assert mem.load_seen()["b"] == (1, 1.0, 1002.0, 0.9)
    vec, stats = mem.load_profile()
    assert vec is not None and vec.tolist() == [2.0] * 4 and stats == {"views": 2.0}
    assert list(mem.load_patterns()) == []
    assert mem.load_counts() == {("evening", "drama"): (1.0, 2.0)}
    meta = mem.meta()
    assert (meta["next_episode"], meta["next_pattern"], meta["last_ts"]) == (3, 12, 1002.0)


def test_patterns_round_trip(mem: Memory) -> None:
    key = np.asarray([0.6, 0.8, 0, 0], np.float32)
    mem.write_patterns([PatternRecord(1, "a", 2.0, 3, 5.0, key)], 2)
    (got,) = mem.load_patterns()
    assert (got.pid, got.content_id, got.successes, got.samples) == (1, "a", 2.0, 3)
    np.testing.assert_array_equal(got.key, key)
    (stats,) = mem.load_patterns(keys=False)
    assert stats.key.size == 0 and stats.samples == 3
    mem.write_patterns([], 2, delete=[1])
    assert mem.pattern_count() == 0


def test_crowd_updates_merge(mem: Memory) -> None:
    mem.write_crowd(CrowdWrite(1, {"a": [("b", 0.5)], "c": [("a", 0.1)]}, {"a": 3.0},
                               [("b", 1.0)]))
    mem.write_crowd(CrowdWrite(2, {"c": []}, {"b": 1.0}, []))
    state = mem.load_crowd()
    assert state.version == 2
    assert state.neighbours == {"a": [("b", 0.5)]}
    assert state.popularity == {"a": 3.0, "b": 1.0}
    assert state.trends == []


def test_sync_state_and_outbound_queue(mem: Memory) -> None:
    assert mem.get_sync("last_version") is None
    mem.put_sync("last_version", b"7")
    assert mem.get_sync("last_version") == b"7"
    seqs = [mem.enqueue(b"r%d" % i) for i in range(3)]
    assert seqs == [1, 2, 3]
    assert mem.peek(2) == [(1, b"r0"), (2, b"r1")]
    assert mem.ack(2) == 2
    assert mem.peek(5) == [(3, b"r2")]
    assert mem.enqueue(b"r3") == 4


def test_consolidated_bank_is_replaced_whole(mem: Memory) -> None:
    mem.replace_consolidated([{"size": 1}, {"size": 2}])
    mem.replace_consolidated([{"size": 3}])
    assert mem.load_consolidated() == [{"size": 3}]


def test_reopen_keeps_committed_writes(tmp_path: Path) -> None:
    m = Memory.open(tmp_path / "mem", map_size=MAP, durability="sync")
    m.write_view(view(1, "a"))
    m.close()
    m = Memory.open(tmp_path / "mem", map_size=MAP, durability="sync")
    try:
        assert [e.content_id for e in m.recent_episodes(5)] == ["a"]
        m.remap()  # drops the mapping, keeps working
        assert [e.content_id for e in m.recent_episodes(5)] == ["a"]
        m.write_view(view(2, "b"))
        assert m.episode_count() == 2
    finally:
        m.close()


def test_garbage_data_file_is_a_corrupt_data_dir(tmp_path: Path) -> None:
    folder = tmp_path / "mem"
    folder.mkdir()
    (folder / "data.mdb").write_bytes(b"\x07garbage" * 4096)
    with pytest.raises(CorruptDataDir, match="not an LMDB file"):
        Memory.open(folder, map_size=MAP)


def test_a_foreign_lmdb_environment_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "mem"), map_size=MAP, max_dbs=4)
    env.open_db(b"something_else")
    env.close()
    with pytest.raises(CorruptDataDir, match="not a brain data directory"):
        Memory.open(tmp_path / "mem", map_size=MAP)


def test_a_wrong_schema_marker_is_refused(tmp_path: Path) -> None:
    m = Memory.open(tmp_path / "mem", map_size=MAP)
    m.close()
    env = lmdb.open(str(tmp_path / "mem"), map_size=MAP, max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(b"schema", b"omega-brain/999", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(SchemaVersionMismatch) as info:
        Memory.open(tmp_path / "mem", map_size=MAP)
    assert info.value.found == "omega-brain/999" and info.value.expected == SCHEMA


def test_a_record_that_does_not_decode_is_reported_as_damage(tmp_path: Path) -> None:
    m = Memory.open(tmp_path / "mem", map_size=MAP)
    m.write_view(view(1, "a"))
    m.close()
    env = lmdb.open(str(tmp_path / "mem"), map_size=MAP, max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put((1).to_bytes(8, "big"), b"\xc1\xc1", db=env.open_db(b"episodes", txn=txn))
    env.close()
    m = Memory.open(tmp_path / "mem", map_size=MAP)
    try:
        with pytest.raises(CorruptDataDir, match="does not decode"):
            m.recent_episodes(5)
    finally:
        m.close()


def test_a_full_map_is_a_typed_error_and_the_transaction_is_rolled_back(tmp_path: Path) -> None:
    m = Memory.open(tmp_path / "mem", map_size=1 << 20, durability="nosync")
    try:
        big = [(rec(i, f"c{i}"), np.zeros(4096, np.float32)) for i in range(200)]
        with pytest.raises(StorageFull):
            m.write_catalog(big, {"catalog_gen": 1})
        assert list(m.load_catalog()) == []
        assert "catalog_gen" not in m.meta()
    finally:
        m.close()
