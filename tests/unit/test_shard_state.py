"""The shard's replicated state machine: apply is exact-once, deterministic, private."""

from __future__ import annotations

import hashlib
import random

import pytest

from omega.raft import MemoryKv
from omega.shard import state
from omega.shard.commands import (
    Advertise,
    CloseOpen,
    CommandError,
    PushBatch,
    PushEntry,
    Registry,
    ReleaseBatch,
    SetGlobal,
    decode_command,
    encode_command,
)

DB = state.DB


def kv_new() -> MemoryKv:
    return MemoryKv(state.DATABASES)


def dh(i: int) -> bytes:
    return hashlib.sha256(b"device-%d" % i).digest()


def entry(i: int, seq: int, reports: tuple[bytes, ...] = (b"r",)) -> PushEntry:
    digest = hashlib.sha256(b"".join(reports)).digest()[:16]
    return PushEntry(dh(i), seq, digest, reports)


def batch(*entries: PushEntry, now_ms: int = 1_000, k: int = 3) -> bytes:
    return encode_command(PushBatch(now_ms, k, tuple(entries)))


def test_commands_round_trip() -> None:
    cmds = [
        PushBatch(5, 2, (entry(1, 7, (b"a", b"b")), entry(2, 1, ()))),
        SetGlobal(3, 0, 2, ((b"n", b"t1", b"v"), (b"r", b"eu", b"x"), (b"c", b"c9", b""))),
        SetGlobal(3, 1, 2, ((b"c", b"c9", b"E"),), 2),
        Advertise("127.0.0.1:1", "tcp://127.0.0.1:2"),
        Registry((dh(1),), (dh(2),)),
        ReleaseBatch(4),
        CloseOpen(1),
    ]
    for cmd in cmds:
        assert decode_command(encode_command(cmd)) == cmd


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x92\x01\x01", b"\x93\x63\x01\x00",
                                 encode_command(ReleaseBatch(1))[:-1]])
def test_malformed_command_changes_nothing(raw: bytes) -> None:
    kv = kv_new()
    state.apply(kv, batch(entry(1, 1)), 1)
    before = kv.state_hash()
    with pytest.raises(CommandError):
        decode_command(raw)
    out = state.apply(kv, raw, 2)
    assert out[0] == "error"
    assert kv.state_hash() == before


def test_push_applied_once_then_duplicate() -> None:
    kv = kv_new()
    (o,) = state.apply(kv, batch(entry(1, 10)), 1)
    assert (o.status, o.seq, o.version) == ("applied", 10, 0)
    # The same push again, in a later entry (a retry after a leader change): no effect
    # but the duplicate counter.
    (o2,) = state.apply(kv, batch(entry(1, 10), now_ms=99_999), 2)
    assert (o2.status, o2.version) == ("duplicate", 0)
    assert state.counters(kv)["pushes"] == 1
    assert state.counters(kv)["duplicates"] == 1
    assert list(state.all_reports(kv)) == [b"r"]
    rec = state.device_record(kv, dh(1))
    assert rec is not None and rec.last_seq == 10 and rec.last_ms == 1_000


def test_same_seq_other_reports_is_conflict_and_older_is_stale() -> None:
    kv = kv_new()
    state.apply(kv, batch(entry(1, 10)), 1)
    before = state.counters(kv)
    (c,) = state.apply(kv, batch(entry(1, 10, (b"other",))), 2)
    (s,) = state.apply(kv, batch(entry(1, 9)), 3)
    assert (c.status, s.status) == ("conflict", "stale")
    assert state.counters(kv)["pushes"] == before["pushes"]
    assert sorted(state.all_reports(kv)) == [b"r"]


def test_duplicates_within_one_batch_apply_once() -> None:
    kv = kv_new()
    outs = state.apply(kv, batch(entry(1, 1), entry(1, 1), entry(1, 2, (b"z",))), 1)
    assert [o.status for o in outs] == ["applied", "duplicate", "applied"]
    assert sorted(state.all_reports(kv)) == [b"r", b"z"]


def test_apply_is_deterministic_across_replicas() -> None:
    rng = random.Random(7)
    cmds = []
    for n in range(60):
        es = [entry(rng.randrange(20), rng.randrange(1, 6), (bytes([rng.randrange(256)]) * 5,))
              for _ in range(rng.randrange(1, 8))]
        cmds.append(batch(*es, now_ms=n, k=4))
        if n % 17 == 0:
            cmds.append(encode_command(SetGlobal(n + 1, 0, 1, ((b"n", b"t%d" % n, b"v"),))))
    a, b = kv_new(), kv_new()
    for i, c in enumerate(cmds, 1):
        assert state.apply(a, c, i) == state.apply(b, c, i)
    assert a.state_hash() == b.state_hash()


def test_reports_stored_without_identity_and_sealed_at_k() -> None:
    kv = kv_new()
    device_ids = [b"tv-%d" % i for i in range(5)]
    for n, i in enumerate(range(5)):
        state.apply(kv, batch(entry(i, 1, (b"rep-%d-a" % i, b"rep-%d-b" % i)), k=3), n + 1)
    # No key or value of a report or bucket mentions a device hash or id.
    hashes = {dh(i) for i in range(5)}
    for key, value in kv.iterate(DB):
        if key.startswith((state.P_REPORT, state.P_BUCKET, state.P_MEMBER)):
            assert not any(h in key or h in value for h in hashes)
            assert not any(d in key or d in value for d in device_ids)
    bs = list(state.buckets(kv))
    assert [(b.bucket, b.devices, b.closed) for b in bs] == [(0, 3, True), (1, 2, False)]
    # Sealed buckets forget which hashed devices fed them.
    assert not list(kv.iterate(DB, state.P_MEMBER + state.u64(0)))
    got = state.take_batch(kv, min_devices=3)
    assert got is not None and got.bucket == 0 and got.devices == 3
    expected = [b"rep-%d-%s" % (i, s) for i in range(3) for s in (b"a", b"b")]
    assert sorted(got.reports) == sorted(expected)
    assert state.take_batch(kv, min_devices=4) is None


def test_same_device_twice_in_a_bucket_counts_once() -> None:
    kv = kv_new()
    state.apply(kv, batch(entry(1, 1), k=2), 1)
    state.apply(kv, batch(entry(1, 2, (b"again",)), k=2), 2)
    (b,) = state.buckets(kv)
    assert (b.devices, b.reports, b.closed) == (1, 2, False)
    state.apply(kv, batch(entry(2, 1), k=2), 3)
    assert next(state.buckets(kv)).closed


def test_release_and_seal_open() -> None:
    kv = kv_new()
    for i in range(3):
        state.apply(kv, batch(entry(i, 1), k=3), i + 1)
    state.apply(kv, batch(entry(9, 1, (b"x", b"y")), k=3), 4)
    assert state.counters(kv)["reports_stored"] == 5
    assert state.apply(kv, encode_command(ReleaseBatch(1)), 5) == ("open", 0)
    assert state.apply(kv, encode_command(CloseOpen(2)), 6) == ("open", 1)
    assert state.apply(kv, encode_command(CloseOpen(1)), 7) == ("closed", 1)
    assert state.apply(kv, encode_command(ReleaseBatch(0)), 8) == ("released", 3)
    assert state.apply(kv, encode_command(ReleaseBatch(0)), 9) == ("absent", 0)
    c = state.counters(kv)
    assert (c["reports_stored"], c["reports_total"], c["open_bucket"]) == (2, 5, 2)
    got = state.take_batch(kv, 1)
    assert got is not None and sorted(got.reports) == [b"x", b"y"]


def glob(version: int, *records: tuple[bytes, bytes, bytes], part: int = 0,
         parts: int = 1, base: int = 0) -> bytes:
    return encode_command(SetGlobal(version, part, parts, records, base))


def test_global_update_cursor_and_deltas() -> None:
    kv = kv_new()
    assert state.apply(kv, glob(1, (b"n", b"a", b"A1"), (b"n", b"b", b"B1"),
                                (b"r", b"eu", b"T1")), 1) == ("applied", 3)
    assert state.apply(kv, glob(2, (b"n", b"a", b"A2"), (b"n", b"b", b"B1"),
                                (b"c", b"new", b"E")), 2) == ("applied", 5)
    before = kv.state_hash()
    assert state.apply(kv, glob(1, (b"n", b"a", b"old")), 3) == ("stale", 5)
    assert state.apply(kv, glob(2, (b"n", b"a", b"again")), 4) == ("stale", 5)
    assert kv.state_hash() == before
    assert state.global_version(kv) == 5
    since0 = [(c.kind, c.key, c.cursor, c.value) for c in state.changes_since(kv, 0)]
    # b's unchanged record keeps its cursor; a moved to the newest one.
    assert since0 == [(b"n", b"b", 2, b"B1"), (b"r", b"eu", 3, b"T1"),
                      (b"n", b"a", 4, b"A2"), (b"c", b"new", 5, b"E")]
    assert [c.key for c in state.changes_since(kv, 3)] == [b"a", b"new"]
    assert list(state.changes_since(kv, 5)) == []
    # Removal is a change too (an empty value), so deltas carry it.
    state.apply(kv, glob(3, (b"n", b"b", b"")), 5)
    (rm,) = state.changes_since(kv, 5)
    assert (rm.key, rm.value, rm.cursor) == (b"b", b"", 6)


def test_global_release_in_parts() -> None:
    kv = kv_new()
    state.apply(kv, glob(7, (b"n", b"a", b"1"), part=1, parts=2), 1)
    c = state.counters(kv)
    assert (c["release"], c["release_complete"], c["global_version"]) == (7, 0, 1)
    assert state.apply(kv, glob(7, (b"n", b"zz", b"dup"), part=1, parts=2), 2)[0] == "stale"
    state.apply(kv, glob(7, (b"n", b"b", b"2"), part=0, parts=2), 3)
    c = state.counters(kv)
    assert (c["release_complete"], c["global_version"]) == (7, 2)
    # A newer release starts a new set of parts.
    state.apply(kv, glob(8, (b"n", b"c", b"3"), part=1, parts=2), 4)
    assert state.counters(kv)["release_complete"] == 7


def test_content_sent_as_changes_completes_only_on_top_of_every_release() -> None:
    """A release whose titles are the changes since release ``base`` completes only on a
    shard that holds every release up to the base; a catch-up of the whole registry for
    the same version (its own part set) completes it and brings the missed titles."""
    kv = kv_new()
    state.apply(kv, glob(1, (b"n", b"a", b"1"), (b"c", b"t1", b"E1")), 1)
    assert state.counters(kv)["release_complete"] == 1
    # Release 2 (new title t2) in two parts; this shard misses part 1.
    state.apply(kv, glob(2, (b"n", b"a", b"2"), part=0, parts=2, base=1), 2)
    # Release 3 comes whole, with only what changed since 2 (t3): not complete here.
    state.apply(kv, glob(3, (b"n", b"a", b"3"), (b"c", b"t3", b"E3"), base=2), 3)
    c = state.counters(kv)
    assert (c["release"], c["release_complete"]) == (3, 1)
    # The catch-up (asked since 1): release 3 with the whole registry, a new part set.
    applied = state.apply(kv, glob(3, (b"n", b"a", b"3"), (b"c", b"t1", b"E1"),
                                   (b"c", b"t2", b"E2"), (b"c", b"t3", b"E3")), 4)
    assert applied[0] == "applied"
    assert state.counters(kv)["release_complete"] == 3
    content = {ch.key for ch in state.changes_since(kv, 0) if ch.kind == b"c"}
    assert content == {b"t1", b"t2", b"t3"}
    # On top of release 3, release 4's changes complete it at once; a repeat is stale.
    assert state.apply(kv, glob(4, (b"c", b"t4", b"E4"), base=3), 5)[0] == "applied"
    assert state.counters(kv)["release_complete"] == 4
    assert state.apply(kv, glob(4, (b"c", b"t4", b"E4"), base=3), 6)[0] == "stale"


def test_a_set_global_logged_before_content_bases_still_applies() -> None:
    """Raft logs hold SetGlobal commands of four elements (no base): the whole registry."""
    from omega.shard.commands import COMMAND_VERSION, pack

    old = pack([SetGlobal.TAG, COMMAND_VERSION, 5, 0, 1, [[b"c", b"t1", b"E"]]])
    assert decode_command(old) == SetGlobal(5, 0, 1, ((b"c", b"t1", b"E"),), 0)
    kv = kv_new()
    assert state.apply(kv, old, 1)[0] == "applied"
    assert state.counters(kv)["release_complete"] == 5
    # A base must be below its version: a command that says otherwise changes nothing.
    bad = pack([SetGlobal.TAG, COMMAND_VERSION, 5, 0, 1, [], 5])
    before = kv.state_hash()
    state.apply(kv, bad, 2)
    assert kv.state_hash() == before


def test_registry_and_adverts() -> None:
    kv = kv_new()
    state.apply(kv, encode_command(Registry((dh(1), dh(2)), ())), 1)
    state.apply(kv, encode_command(Registry((), (dh(2),))), 2)
    state.apply(kv, encode_command(Registry((dh(2),), ())), 3)  # revocation is final
    assert state.registry_status(kv, dh(1)) == state.REGISTERED
    assert state.registry_status(kv, dh(2)) == state.REVOKED
    assert state.registry_status(kv, dh(3)) == 0
    state.apply(kv, encode_command(Advertise("127.0.0.1:9", "tcp://127.0.0.1:8")), 4)
    assert state.advertised(kv) == {"127.0.0.1:9": "tcp://127.0.0.1:8"}
