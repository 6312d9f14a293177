"""ReplicatedLmdb in this process: the password rule, binding, submit's errors,
restart from disk, and that a wrong password keeps a node out of the group.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from omega.raft import (
    ApplyError,
    CommandTooLarge,
    CommitTimeout,
    KvWriter,
    LeaderChanged,
    NotLeader,
    PasswordRequired,
    RaftError,
    RaftSettings,
    ReplicatedLmdb,
    StoreClosed,
)
from omega.schema import SettingError, load
from omega.waiting import wait_for
from tests.nodeproc import free_port

# PySyncObj reads its journal's meta file without closing it (one fd per start).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in.*raft\.journal\.meta:pytest.PytestUnraisableExceptionWarning")

T = TypeVar("T")
U64 = struct.Struct(">Q")
PASSWORD = b"unit-test-cluster-password"


def apply(kv: KvWriter, command: bytes, index: int) -> int:
    if command == b"boom":
        kv.put("main", b"partial", b"x")
        raise ValueError("boom requested")
    raw = kv.get("main", b"applies")
    n = (0 if raw is None else U64.unpack(raw)[0]) + 1
    kv.put("main", b"applies", U64.pack(n))
    kv.put("main", b"cmd:" + command, U64.pack(index))
    return n


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def single(tmp_path: Path, port: int) -> Iterator[ReplicatedLmdb]:
    settings = RaftSettings(self_address=f"127.0.0.1:{port}", max_command_bytes=4096)
    node = ReplicatedLmdb(settings, tmp_path, PASSWORD, apply)
    wait_for(node.is_leader, 10, "a one-node group to elect itself")
    yield node
    node.close()


# -- the password rule and the bind address ------------------------------------------


def test_no_password_without_dev_mode_is_refused(tmp_path: Path, port: int) -> None:
    settings = RaftSettings(self_address=f"127.0.0.1:{port}")
    with pytest.raises(PasswordRequired, match="dev_mode = true") as info:
        ReplicatedLmdb(settings, tmp_path, None, apply)
    assert "pickle" in str(info.value)
    with socket.socket() as s:  # nothing was bound
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_dev_mode_allows_no_password_on_loopback_only(tmp_path: Path) -> None:
    # Refused at config validation (the CLI exits 2), before anything is opened.
    with pytest.raises(SettingError, match="loopback"):
        RaftSettings(self_address="10.1.2.3:7100", dev_mode=True)
    with pytest.raises(PasswordRequired, match="at least 16 bytes"):
        ReplicatedLmdb(RaftSettings(self_address=f"127.0.0.1:{free_port()}"),
                       tmp_path, b"short", apply)
    with pytest.raises(PasswordRequired, match="distinct characters"):
        ReplicatedLmdb(RaftSettings(self_address=f"127.0.0.1:{free_port()}"),
                       tmp_path, b"a" * 16, apply)
    node = ReplicatedLmdb(RaftSettings(self_address=f"127.0.0.1:{free_port()}", dev_mode=True),
                          tmp_path, None, apply)
    try:
        wait_for(node.is_leader, 10, "leadership")
        assert node.submit(b"a", 5) == 1
    finally:
        node.close()


def test_settings_refuse_wildcards_and_bad_timing() -> None:
    with pytest.raises(SettingError) as info:
        load(RaftSettings, {"self_address": "0.0.0.0:7100"}, "raft")
    assert info.value.key == "raft.self_address"
    with pytest.raises(SettingError, match=r"partners\[1\]"):
        load(RaftSettings, {"partners": ["127.0.0.1:1", "nonsense"]}, "raft")
    with pytest.raises(SettingError, match="heartbeat_s"):
        load(RaftSettings, {"heartbeat_s": 0.05}, "raft")
    settings = load(RaftSettings, {"self_address": "10.0.0.5:7100",
                                   "partners": ["10.0.0.6:7100", "10.0.0.7:7100"]}, "raft")
    assert settings.partners == ("10.0.0.6:7100", "10.0.0.7:7100")


def test_port_binds_to_the_cluster_address_only(single: ReplicatedLmdb, port: int) -> None:
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) == 0
    with socket.socket() as s:  # another loopback address of this host: not bound there
        assert s.connect_ex(("127.0.0.2", port)) != 0


def test_port_in_use_is_a_typed_error(single: ReplicatedLmdb, port: int, tmp_path: Path) -> None:
    settings = RaftSettings(self_address=f"127.0.0.1:{port}")
    with pytest.raises(RaftError, match="cannot bind"):
        ReplicatedLmdb(settings, tmp_path / "other", PASSWORD, apply)


# -- submit ---------------------------------------------------------------------------


def test_submit_returns_the_apply_result_and_errors_are_typed(single: ReplicatedLmdb) -> None:
    assert [single.submit(b"c%d" % i, 5) for i in range(3)] == [1, 2, 3]
    with pytest.raises(ApplyError, match="boom requested") as info:
        single.submit(b"boom", 5)
    assert info.value.kind == "ValueError"
    with single.read() as view:
        assert view.get("main", b"partial") is None  # rolled back
        assert U64.unpack(view.get("main", b"applies") or b"")[0] == 3
        assert [k for k, _ in view.iterate("main", b"cmd:")] == [b"cmd:c0", b"cmd:c1", b"cmd:c2"]
    with pytest.raises(CommandTooLarge):
        single.submit(b"x" * 4097, 5)
    with pytest.raises(TypeError):
        single.submit("text", 5)  # type: ignore[arg-type]
    status = single.status()
    assert status["role"] == "leader" and status["leader"] == status["self"]
    assert status["applied_index"] == status["commit_index"] >= 5
    assert status["state_index"] >= 5


def test_submit_from_apply_is_refused(tmp_path: Path, port: int) -> None:
    holder: dict[str, ReplicatedLmdb] = {}
    errors: list[BaseException] = []

    def reentrant(kv: KvWriter, command: bytes, index: int) -> None:
        try:
            holder["node"].submit(b"inner", 1)
        except RaftError as exc:
            errors.append(exc)

    node = ReplicatedLmdb(RaftSettings(self_address=f"127.0.0.1:{port}"), tmp_path,
                          PASSWORD, reentrant)
    holder["node"] = node
    try:
        wait_for(node.is_leader, 10, "leadership")
        node.submit(b"first", 5)  # apply learns the Raft thread's identity
        node.submit(b"second", 5)
        assert any("from apply()" in str(e) for e in errors)
    finally:
        node.close()


class Outcomes:
    """``on_done`` for ``submit_async``: records (result, error, thread) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, BaseException | None, int]] = []
        self.cond = threading.Condition()

    def __call__(self, result: object, error: BaseException | None) -> None:
        with self.cond:
            self.calls.append((result, error, threading.get_ident()))
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[object, BaseException | None, int]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, timeout), self.calls
            return list(self.calls)


def test_submit_async_answers_on_the_raft_thread(single: ReplicatedLmdb) -> None:
    done = Outcomes()
    single.submit_async(b"a1", 5, done)
    single.submit_async(b"boom", 5, done)
    (r1, e1, t1), (r2, e2, t2) = done.wait(2)
    assert (r1, e1) == (1, None) and r2 is None and isinstance(e2, ApplyError)
    assert t1 == t2 != threading.get_ident()  # the Raft thread, not the caller
    with pytest.raises(CommandTooLarge):  # refusals known at once are raised
        single.submit_async(b"x" * 4097, 5, done)
    assert single.submit(b"a2", 5) == 2  # the blocking form still works


def test_tick_hooks_run_on_the_raft_thread_and_may_propose(single: ReplicatedLmdb) -> None:
    done = Outcomes()
    proposed: list[int] = []
    hook_threads: set[int] = set()

    def hook() -> None:
        hook_threads.add(threading.get_ident())
        if not proposed:  # a hook proposes from the Raft thread (the shard's committer)
            proposed.append(1)
            single.submit_async(b"from-hook", 5, done)

    single.add_tick_hook(hook)
    single.wake()
    ((result, error, thread),) = done.wait(1)
    assert (result, error) == (1, None) and hook_threads == {thread}
    single.remove_tick_hook(hook)
    single.wake()
    with single.read() as view:
        assert view.get("main", b"cmd:from-hook") is not None


def test_no_majority_times_out_once(tmp_path: Path) -> None:
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    na = ReplicatedLmdb(RaftSettings(self_address=a, partners=(b,)), tmp_path / "a",
                        PASSWORD, apply)
    nb = ReplicatedLmdb(RaftSettings(self_address=b, partners=(a,)), tmp_path / "b",
                        PASSWORD, apply)
    try:
        leader = wait_for(lambda: next((n for n in (na, nb) if n.is_leader()), None), 10,
                          "a leader")
        assert leader.submit(b"ok", 5) == 1
        (nb if leader is na else na).close()  # the only follower is gone: nothing commits
        done = Outcomes()
        t0 = time.monotonic()
        leader.submit_async(b"stuck", 0.3, done)
        ((result, error, _),) = done.wait(1)
        assert result is None and isinstance(error, CommitTimeout)
        assert time.monotonic() - t0 < 1.4  # before the leader steps down (1.5 s)
        with pytest.raises((CommitTimeout, LeaderChanged, NotLeader)):
            leader.submit(b"stuck too", 0.3)
        wait_for(lambda: not leader.is_leader(), 10, "the cut-off leader to step down")
        assert len(done.calls) == 1  # stepping down does not answer it again
    finally:
        na.close()
        nb.close()


def test_closed_store_refuses(single: ReplicatedLmdb) -> None:
    single.close()
    with pytest.raises(StoreClosed):
        single.submit(b"x", 1)
    with pytest.raises(StoreClosed), single.read():
        pass
    single.close()  # idempotent


def test_restart_from_disk_skips_what_was_applied(tmp_path: Path) -> None:
    settings = RaftSettings(self_address=f"127.0.0.1:{free_port()}",
                            log_compaction_min_entries=20)
    node = ReplicatedLmdb(settings, tmp_path, PASSWORD, apply)
    wait_for(node.is_leader, 10, "leadership")
    for i in range(50):
        node.submit(b"c%d" % i, 5)
    wait_for(lambda: node.status()["snapshots_made"] >= 1, 10, "a log compaction")
    node.close()
    # Entries after the last snapshot (compaction off now), so that the restart
    # has journal entries to replay and skip.
    settings = dataclasses.replace(settings, log_compaction_min_entries=100_000)
    node = ReplicatedLmdb(settings, tmp_path, PASSWORD, apply)
    wait_for(node.is_leader, 10, "leadership")
    for i in range(50, 55):
        node.submit(b"c%d" % i, 5)
    before = node.state_digest()
    node.close()

    node = ReplicatedLmdb(settings, tmp_path, PASSWORD, apply)
    try:
        wait_for(node.is_leader, 10, "leadership after restart")
        # Leadership comes before the journal is replayed: wait for Raft's applied
        # index to reach the stored one (it went unwaited, and flaked under load).
        wait_for(lambda: node.status()["applied_index"] >= before[0], 10, "the replay")
        # The journal after the last snapshot was replayed and skipped, not re-applied.
        assert node.state_digest()[1] == before[1]
        assert node.status()["replays_skipped"] >= 5
        assert node.submit(b"after", 5) == 56
        with node.read() as view:
            assert U64.unpack(view.get("main", b"applies") or b"")[0] == 56
    finally:
        node.close()


# -- the password keeps strangers out --------------------------------------------------


def test_wrong_password_keeps_a_node_out(tmp_path: Path) -> None:
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    sa = RaftSettings(self_address=a, partners=(b,))
    sb = RaftSettings(self_address=b, partners=(a,))
    # A two-node group needs both votes: with different passwords there is no leader.
    na = ReplicatedLmdb(sa, tmp_path / "a", PASSWORD, apply)
    nb = ReplicatedLmdb(sb, tmp_path / "b", b"another-password-entirely", apply)
    try:
        deadline = time.monotonic() + 1.5  # 5x the largest election timeout
        while time.monotonic() < deadline:
            assert na.leader() is None and nb.leader() is None
            assert not any(na.status()["partners"].values())
            threading.Event().wait(0.05)
        with pytest.raises(NotLeader):
            na.submit(b"x", 1)
    finally:
        nb.close()
    # The same pair with the right password elects a leader and commits.
    nb = ReplicatedLmdb(sb, tmp_path / "b", PASSWORD, apply)
    try:
        leader = wait_for(lambda: next((n for n in (na, nb) if n.is_leader()), None), 10,
                          "a leader with matching passwords")
        assert leader.submit(b"x", 5) == 1
    finally:
        na.close()
        nb.close()


def test_raft_messages_travel_uncompressed_and_compressed_ones_are_read() -> None:
    """PySyncObj's zlib step is replaced: sent as is, a zlib stream still inflates."""
    import pickle
    import zlib

    from omega.raft import node

    assert node._pysyncobj_tcp.zlib is node._WireCodec
    message = pickle.dumps(("append_entries", [(b"\x78sealed" * 50, 7, 2)]), 2)
    assert message[:1] == b"\x80"
    assert node._WireCodec.compress(message, 3) is message
    assert node._WireCodec.decompress(message) == message
    assert node._WireCodec.decompress(zlib.compress(message, 3)) == message
    with pytest.raises(zlib.error):
        node._WireCodec.decompress(b"\x78 not a zlib stream")


def test_the_journal_is_on_disk_before_an_entry_is_sent_or_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync_journal (the default): no Raft message leaves with unsynced journal changes.

    PySyncObj's own TCP send is wrapped to record, for every append_entries (the
    leader's) and next_node_idx (a follower's acknowledgement), whether the
    sender's journal still had unsynced changes at that moment.
    """
    from pysyncobj.transport import TCPTransport

    dirty_at_send: dict[str, list[bool]] = {"append_entries": [], "next_node_idx": []}
    real_send = TCPTransport.send

    def spy(self: Any, node: Any, message: Any) -> Any:
        journal = getattr(self._syncObj, "journal", None)
        kind = message.get("type") if isinstance(message, dict) else None
        if journal is not None and kind in dirty_at_send:
            dirty_at_send[kind].append(journal.dirty)
        return real_send(self, node, message)

    monkeypatch.setattr(TCPTransport, "send", spy)
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    nodes = [ReplicatedLmdb(RaftSettings(self_address=a, partners=(b,)), tmp_path / "a",
                            PASSWORD, apply),
             ReplicatedLmdb(RaftSettings(self_address=b, partners=(a,)), tmp_path / "b",
                            PASSWORD, apply)]
    try:
        leader = wait_for(lambda: next((n for n in nodes if n.is_leader()), None), 10,
                          "a leader")
        for i in range(20):
            assert leader.submit(b"cmd%d" % i, 5) == i + 1
        follower = next(n for n in nodes if n is not leader)
        wait_for(lambda: follower.status()["applied_index"] >= leader.status()["applied_index"],
                 10, "the follower applying every entry")
        # Every entry went out in an append_entries and came back acknowledged.
        assert len(dirty_at_send["append_entries"]) >= 20
        assert len(dirty_at_send["next_node_idx"]) >= 20
        assert not any(dirty_at_send["append_entries"] + dirty_at_send["next_node_idx"])
        for node in nodes:
            journal = node.status()["journal"]
            assert journal["fsync"] is True and journal["syncs"] >= 20, journal
    finally:
        for node in nodes:
            node.close()


def test_a_one_replica_group_syncs_its_journal_before_applying(tmp_path: Path,
                                                               port: int) -> None:
    """Alone, a leader commits without sending anything: the apply path syncs."""
    holder: list[ReplicatedLmdb] = []
    dirty_at_apply: list[bool] = []

    def apply_recorded(kv: KvWriter, command: bytes, index: int) -> int:
        journal = holder[0]._core.journal  # this replica's DurableJournal
        assert journal is not None
        dirty_at_apply.append(journal.dirty)
        return apply(kv, command, index)

    holder.append(ReplicatedLmdb(RaftSettings(self_address=f"127.0.0.1:{port}"), tmp_path,
                                 PASSWORD, apply_recorded))
    node = holder[0]
    try:
        wait_for(node.is_leader, 10, "leadership")
        for i in range(10):
            assert node.submit(b"cmd%d" % i, 5) == i + 1
        assert dirty_at_apply == [False] * 10
        assert node.status()["journal"]["syncs"] >= 10
    finally:
        node.close()


def test_fsync_journal_off_leaves_pysyncobjs_journal_as_is(tmp_path: Path, port: int) -> None:
    settings = RaftSettings(self_address=f"127.0.0.1:{port}", fsync_journal=False)
    node = ReplicatedLmdb(settings, tmp_path, PASSWORD, apply)
    try:
        wait_for(node.is_leader, 10, "leadership")
        assert node.submit(b"a", 5) == 1
        assert node.status()["journal"] == {"fsync": False}
    finally:
        node.close()
