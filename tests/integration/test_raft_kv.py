"""The LMDB state machine under Raft, on real LMDB files (no Raft here).

Exactly-once application by index, rollback of a failing apply, storage failures,
snapshots (copy, read, install/skip), and congruence with the in-memory twin.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import pytest

from omega.raft import (
    BadKey,
    MemoryKv,
    SnapshotError,
    StorageFailure,
    StoreClosed,
    UnknownDatabase,
)
from omega.raft.kv import SKIPPED, LmdbStore, read_snapshot_meta
from omega.raft.ports import ApplyFailed, KvWriter

DBS = ("kv", "meta")
U64 = struct.Struct(">Q")


def counting_apply(kv: KvWriter, command: bytes, index: int) -> int:
    """Appends to a counter: applying an entry twice is visible."""
    if command == b"boom":
        kv.put("kv", b"partial", b"must roll back")
        raise ValueError("boom")
    raw = kv.get("meta", b"applies")
    n = (0 if raw is None else U64.unpack(raw)[0]) + 1
    kv.put("meta", b"applies", U64.pack(n))
    kv.put("kv", command, U64.pack(index))
    return n


def store(path: Path, map_size: int = 1 << 26) -> LmdbStore:
    return LmdbStore(path, DBS, map_size=map_size, fsync=False)


def test_entries_apply_once_by_index(tmp_path: Path) -> None:
    s = store(tmp_path / "state.mdb")
    assert [s.apply_entry(i, b"k%d" % i, counting_apply) for i in (2, 3, 5)] == [1, 2, 3]
    # A replay (restart, snapshot) of indexes at or below the stored one is skipped.
    assert s.apply_entry(3, b"k3", counting_apply) is SKIPPED
    assert s.apply_entry(5, b"other", counting_apply) is SKIPPED
    assert s.skipped == 2
    assert s.applied_index() == 5
    s.close()
    # The applied index is durable with the state it describes.
    s = store(tmp_path / "state.mdb")
    assert s.applied_index() == 5
    assert s.apply_entry(5, b"k5", counting_apply) is SKIPPED
    assert s.apply_entry(6, b"k6", counting_apply) == 4
    with s.reader() as view:
        assert U64.unpack(view.get("meta", b"applies") or b"")[0] == 4
        assert [k for k, _ in view.iterate("kv", b"k")] == [b"k2", b"k3", b"k5", b"k6"]
    s.close()


def test_failing_apply_rolls_back_but_consumes_the_index(tmp_path: Path) -> None:
    s = store(tmp_path / "state.mdb")
    s.apply_entry(1, b"a", counting_apply)
    before = s.state_hash()[1]
    result = s.apply_entry(2, b"boom", counting_apply)
    assert isinstance(result, ApplyFailed)
    assert (result.index, result.kind, result.message) == (2, "ValueError", "boom")
    assert s.applied_index() == 2
    assert s.state_hash()[1] == before  # the partial write is gone
    with s.reader() as view:
        assert view.get("kv", b"partial") is None
    s.close()


def test_map_full_is_a_storage_failure_and_records_nothing(tmp_path: Path) -> None:
    s = store(tmp_path / "state.mdb", map_size=1 << 20)

    def fill(kv: KvWriter, command: bytes, index: int) -> None:
        for i in range(4000):  # ~4 MB into a 1 MiB map
            kv.put("kv", b"x%06d" % i, b"v" * 1000)

    with pytest.raises(StorageFailure, match="map is full"):
        s.apply_entry(1, b"fill", fill)
    assert s.applied_index() == 0  # not recorded: the replica must not move past it
    # An apply that swallows the LMDB error does not get the entry recorded either.

    def swallow(kv: KvWriter, command: bytes, index: int) -> None:
        with contextlib.suppress(StorageFailure):
            fill(kv, command, index)

    with pytest.raises(StorageFailure):
        s.apply_entry(1, b"fill", swallow)
    assert s.applied_index() == 0
    s.close()


def test_bad_keys_and_unknown_databases_are_typed(tmp_path: Path) -> None:
    mem = MemoryKv(DBS)
    with pytest.raises(UnknownDatabase):
        mem.put("nope", b"k", b"v")
    with pytest.raises(BadKey):
        mem.put("kv", b"", b"v")
    with pytest.raises(BadKey):
        mem.put("kv", b"k" * 512, b"v")

    s = store(tmp_path / "state.mdb")

    def bad(kv: KvWriter, command: bytes, index: int) -> None:
        if command == b"db":
            kv.put("nope", b"k", b"v")
        kv.put("kv", b"k" * 512, b"v")

    results = [s.apply_entry(1, b"db", bad), s.apply_entry(2, b"key", bad)]
    assert [type(r) for r in results] == [ApplyFailed, ApplyFailed]
    assert [r.kind for r in results] == ["UnknownDatabase", "BadKey"]
    with s.reader() as view, pytest.raises(Exception, match="read-only"):
        view.put("kv", b"k", b"v")  # type: ignore[attr-defined]
    s.close()


def test_iteration_with_prefix_and_start(tmp_path: Path) -> None:
    s = store(tmp_path / "state.mdb")
    mem = MemoryKv(DBS)
    keys = [b"a1", b"b1", b"b2", b"b3", b"c1"]

    def put_all(kv: KvWriter, command: bytes, index: int) -> None:
        for k in keys:
            kv.put("kv", k, k.upper())

    s.apply_entry(1, b"", put_all)
    put_all(mem, b"", 1)
    with s.reader() as view:
        for kv in (view, mem):
            assert [k for k, _ in kv.iterate("kv", b"b")] == [b"b1", b"b2", b"b3"]
            assert [k for k, _ in kv.iterate("kv", b"b", start=b"b2")] == [b"b2", b"b3"]
            assert list(kv.iterate("kv", b"b", start=b"b9")) == []
            assert [v for _, v in kv.iterate("kv")] == [k.upper() for k in keys]
    s.close()


def test_lmdb_and_memory_twin_agree(tmp_path: Path) -> None:
    """Congruence: the same commands leave the same state hash in LMDB and in memory."""
    s = store(tmp_path / "state.mdb")
    mem = MemoryKv(DBS)
    commands = [b"k%d" % (i % 37) for i in range(300)] + [b"boom"]

    def mixed(kv: KvWriter, command: bytes, index: int) -> int:
        n = counting_apply(kv, command, index)
        if index % 7 == 0:
            kv.delete("kv", b"k%d" % (index % 11))
        return n

    for index, command in enumerate(commands, start=1):
        assert s.apply_entry(index, command, mixed) == mem.apply_entry(index, command, mixed)
    assert isinstance(mem.apply_entry(len(commands) + 1, b"boom", mixed), ApplyFailed)
    assert isinstance(s.apply_entry(len(commands) + 1, b"boom", mixed), ApplyFailed)
    assert s.state_hash() == (mem.applied_index, mem.state_hash())
    s.close()


def test_snapshot_copy_install_and_skip(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    leader = store(tmp_path / "a" / "state.mdb")
    for i in range(1, 501):
        leader.apply_entry(i, b"key%d" % i, counting_apply)
    last, prev = (b"cmd-last", 503, 2), (b"cmd-prev", 502, 2)
    copy = leader.begin_snapshot(503, last, prev, ["127.0.0.1:2", "127.0.0.1:1"])
    assert leader.applied_index() == 503  # the no-op entries after the last apply
    snap = tmp_path / "raft.snapshot"
    copy.write(snap)
    meta = read_snapshot_meta(snap)
    assert (meta.applied_index, meta.last, meta.prev) == (503, last, prev)
    assert meta.cluster == ("127.0.0.1:1", "127.0.0.1:2")

    follower = store(tmp_path / "b" / "state.mdb")
    follower.apply_entry(1, b"key1", counting_apply)
    with follower.reader() as view:
        assert view.get("kv", b"key1") is not None
    assert follower.install(snap) is True
    assert follower.applied_index() == 503
    assert follower.state_hash() == leader.state_hash()
    follower.apply_entry(504, b"after", counting_apply)
    # A snapshot behind the local state is not installed (restart: own older dump).
    assert follower.install(snap) is False
    assert follower.applied_index() == 504
    follower.close()
    leader.close()


def test_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "raft.snapshot"
    bad.write_bytes(b"not lmdb at all" * 1000)
    with pytest.raises(SnapshotError):
        read_snapshot_meta(bad)
    s = store(tmp_path / "state.mdb")
    with pytest.raises(SnapshotError):
        s.install(bad)
    assert s.applied_index() == 0
    s.close()


def test_view_checks_on_every_call(tmp_path: Path) -> None:
    """The inlined checks of get/put/delete refuse what the helpers refused."""
    s = store(tmp_path / "state.mdb")
    seen: list[str] = []

    def probe(kv: KvWriter, command: bytes, index: int) -> None:
        calls: list[tuple[str, Any]] = [
            ("get-empty", lambda: kv.get("kv", b"")),
            ("get-long", lambda: kv.get("kv", b"k" * 512)),
            ("get-str", lambda: kv.get("kv", "k")),
            ("get-bytearray", lambda: kv.get("kv", bytearray(b"k"))),
            ("get-db", lambda: kv.get("nope", b"k")),
            ("put-value", lambda: kv.put("kv", b"k", "v")),
            ("put-db", lambda: kv.put("nope", b"k", b"v")),
            ("delete-key", lambda: kv.delete("kv", b"")),
            ("delete-db", lambda: kv.delete("nope", b"k")),
        ]
        for name, call in calls:
            try:
                call()
            except (BadKey, UnknownDatabase) as exc:
                seen.append(f"{name}:{type(exc).__name__}")
        kv.put("kv", b"k" * 511, b"longest key")
        assert kv.get("kv", b"k" * 511) == b"longest key"
        assert kv.delete("kv", b"k" * 511) and not kv.delete("kv", b"k" * 511)

    assert s.apply_entry(1, b"x", probe) is None
    assert seen == ["get-empty:BadKey", "get-long:BadKey", "get-str:BadKey",
                    "get-bytearray:BadKey", "get-db:UnknownDatabase", "put-value:BadKey",
                    "put-db:UnknownDatabase", "delete-key:BadKey", "delete-db:UnknownDatabase"]
    with s.reader() as view:
        pass
    with pytest.raises(StoreClosed):
        view.get("kv", b"k")  # the view's transaction ended with the block
    s.close()


def test_readers_release_the_gate(tmp_path: Path) -> None:
    """Many reads, one failing inside its block: close still gets the store at once."""
    s = LmdbStore(tmp_path / "state.mdb", DBS, map_size=1 << 26, fsync=False, gate_timeout_s=2.0)
    s.apply_entry(1, b"a", counting_apply)
    for _ in range(100):
        with s.reader() as view:
            assert view.get("kv", b"a") == U64.pack(1)
    with contextlib.suppress(KeyError), s.reader():
        raise KeyError("inside a read")
    s.close()  # would raise RaftError after gate_timeout_s if a reader leaked
    with pytest.raises(StoreClosed):
        s.reader().__enter__()
