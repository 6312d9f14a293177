"""ShardService over an in-memory store: validation, group commit, exactly-once, pulls.

Every refusal is checked to change nothing (state hash before and after).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from omega.client import ClientSettings, DeviceClient
from omega.errors import StoreError
from omega.protocol import (
    EMBEDDING_BYTES,
    ErrorReply,
    GlobalUpdate,
    Health,
    HealthReply,
    Heartbeat,
    HeartbeatAck,
    NewContent,
    Pull,
    PullResp,
    Push,
    PushAck,
    RateLimited,
    Replay,
    Stale,
    Unauthorized,
    decode,
    derive_device_key,
    encode,
    sign,
)
from omega.raft import Discarded, KvReader, LeaderChanged, MemoryKv, NotLeader, RaftSettings
from omega.shard import ShardService, ShardSettings, state
from omega.transport import InMemoryRequester, Pending, reply_bytes

FLEET = b"fleet-key-for-tests-0123456789"
DEDUP = b"dedup-secret-for-tests-01234567"
SELF_RAFT = "127.0.0.1:7420"
OTHER_RAFT = "127.0.0.1:7421"
NOW = 1_700_000_000.0


class Wall:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


class FakeStore:
    """The ShardStore port over MemoryKv: submit applies at once, under a lock.

    ``faults`` is a queue of (exception, applied) the next submits raise: applied
    True raises after applying (outcome unknown, e.g. leader changed after commit).
    ``hold()`` keeps asynchronous submits uncommitted until ``release()``. The "Raft
    thread" is whoever calls ``wake()`` or ``release()``: tick hooks run there.
    """

    def __init__(self) -> None:
        self.kv = MemoryKv(state.DATABASES)
        self.lock = threading.RLock()
        self.index = 0
        self.leading = True
        self.leader_addr: str | None = SELF_RAFT
        self.faults: list[tuple[Exception, bool]] = []
        self.submits = 0
        self.holding = False
        self.held: list[tuple[bytes, Any]] = []
        self.hooks: list[Any] = []

    def submit(self, command: bytes, timeout_s: float) -> Any:
        with self.lock:
            if not self.leading:
                raise NotLeader(self.leader_addr)
            self.submits += 1
            if self.faults:
                exc, applied = self.faults.pop(0)
                if applied:
                    self.index += 1
                    state.apply(self.kv, command, self.index)
                raise exc
            self.index += 1
            return state.apply(self.kv, command, self.index)

    def submit_async(self, command: bytes, timeout_s: float, on_done: Any) -> None:
        with self.lock:
            if not self.leading:
                raise NotLeader(self.leader_addr)
            if self.holding:
                self.held.append((command, on_done))
                return
        self._complete(command, on_done)

    def _complete(self, command: bytes, on_done: Any) -> None:
        try:
            result = self.submit(command, 5)
        except StoreError as exc:
            on_done(None, exc)
        else:
            on_done(result, None)

    def hold(self) -> None:
        with self.lock:
            self.holding = True

    def release(self) -> None:
        """Commit what was held, in order, then tick."""
        with self.lock:
            self.holding = False
            held, self.held = self.held, []
        for command, on_done in held:
            self._complete(command, on_done)
        self.wake()

    def add_tick_hook(self, hook: Any) -> None:
        self.hooks.append(hook)

    def remove_tick_hook(self, hook: Any) -> None:
        self.hooks = [h for h in self.hooks if h != hook]

    def wake(self) -> None:
        for hook in list(self.hooks):
            hook()

    @contextlib.contextmanager
    def read(self) -> Iterator[KvReader]:
        with self.lock:
            yield self.kv

    def is_leader(self) -> bool:
        return self.leading

    def leader(self) -> str | None:
        return self.leader_addr

    def status(self) -> dict[str, Any]:
        return {"role": "leader" if self.leading else "follower", "leader": self.leader_addr,
                "commit_index": self.index, "applied_index": self.index}

    def state_hash(self) -> str:
        with self.lock:
            return self.kv.state_hash()


def settings(**kw: Any) -> ShardSettings:
    base = ShardSettings(raft=RaftSettings(self_address=SELF_RAFT, partners=(OTHER_RAFT,)),
                         advertise="tcp://127.0.0.1:7410",
                         peer_addresses=(f"{OTHER_RAFT}=tcp://127.0.0.1:7411",),
                         rate_limit_interval_s=60.0, k_anonymity=3,
                         group_commit_max_delay_ms=1.0)
    return replace(base, **kw)


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def svc(store: FakeStore, wall: Wall) -> Iterator[ShardService]:
    with ShardService(settings(), store, FLEET, DEDUP, wall_clock=wall) as s:
        yield s


def key(device: str) -> bytes:
    return derive_device_key(FLEET, device)


def push(device: str, seq: int, reports: tuple[bytes, ...] = (b"sealed",), *,
         ts: float = NOW, k: bytes | None = None) -> bytes:
    return encode(sign(Push(device, seq, int(ts * 1000), reports), k or key(device)))


def call(svc: ShardService, frame: bytes) -> Any:
    return decode(reply_bytes(svc.handle(frame), 10))


def refused(svc: ShardService, store: FakeStore, frame: bytes, code: str) -> ErrorReply:
    before = store.state_hash()
    reply = call(svc, frame)
    assert isinstance(reply, ErrorReply), reply
    assert reply.code == code, reply
    assert store.state_hash() == before
    return reply


# -- the happy path and exactly-once ------------------------------------------------


def test_push_acknowledged_after_apply(svc: ShardService, store: FakeStore) -> None:
    ack = call(svc, push("tv-1", 5))
    assert isinstance(ack, PushAck) and ack.seq == 5 and ack.retry_after_s == 60.0
    with store.read() as kv:
        assert state.counters(kv)["pushes"] == 1
        assert list(state.all_reports(kv)) == [b"sealed"]


def test_push_reply_is_deferred_until_the_commit(svc: ShardService, store: FakeStore) -> None:
    store.hold()  # the batch is proposed but not committed yet
    reply = svc.handle(push("tv-1", 5))
    assert isinstance(reply, Pending)  # the request's thread is free meanwhile
    retry = svc.handle(push("tv-1", 5))  # the same push again joins it
    assert isinstance(retry, Pending) and not reply.done and not retry.done
    refused = decode(reply_bytes(svc.handle(push("tv-1", 6)), 1))  # another, while pending
    assert isinstance(refused, ErrorReply) and refused.code == "rate_limited"
    store.release()
    ack = decode(reply.wait(10))
    assert isinstance(ack, PushAck) and ack.seq == 5
    assert decode(retry.wait(10)) == ack
    with store.read() as kv:
        assert state.counters(kv)["pushes"] == 1


def test_retry_of_last_push_gets_same_ack_and_changes_nothing(
        svc: ShardService, store: FakeStore, wall: Wall) -> None:
    first = call(svc, push("tv-1", 5))
    before = store.state_hash()
    wall.t += 1  # a retry signed later, within the rate-limit interval
    again = call(svc, push("tv-1", 5, ts=wall.t))
    assert again == first
    assert store.state_hash() == before


def test_leader_change_after_commit_then_retry_applies_once(
        svc: ShardService, store: FakeStore) -> None:
    store.faults.append((LeaderChanged("lost leadership"), True))
    reply = call(svc, push("tv-1", 9))
    assert isinstance(reply, ErrorReply) and reply.code == "unavailable"
    ack = call(svc, push("tv-1", 9))  # the device retries unchanged
    assert isinstance(ack, PushAck) and ack.seq == 9
    with store.read() as kv:
        assert state.counters(kv)["pushes"] == 1
        assert list(state.all_reports(kv)) == [b"sealed"]


def test_discarded_then_retry_applies_once(svc: ShardService, store: FakeStore) -> None:
    store.faults.append((Discarded("replaced"), False))
    assert call(svc, push("tv-1", 9)).code == "unavailable"
    assert isinstance(call(svc, push("tv-1", 9)), PushAck)
    with store.read() as kv:
        assert state.counters(kv)["pushes"] == 1


def test_group_commit_batches_concurrent_pushes(svc: ShardService, store: FakeStore) -> None:
    store.hold()  # hold the first batch so the others queue up behind it
    replies: dict[int, Any] = {}

    def one(i: int) -> None:
        replies[i] = call(svc, push(f"tv-{i}", 1, (b"r%d" % i,)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    # Release once every push is queued or in flight.
    deadline_ok = _wait(lambda: svc.stats()["inflight"] == 40)
    store.release()
    for t in threads:
        t.join(10)
    assert deadline_ok
    assert all(isinstance(r, PushAck) for r in replies.values()) and len(replies) == 40
    assert store.submits < 40 / 4  # many pushes per Raft entry
    gc = svc.stats()["group_commit"]
    assert gc["items"] == 40 and gc["largest_batch"] > 1
    with store.read() as kv:
        assert state.counters(kv)["pushes"] == 40


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    from omega.waiting import wait_for

    return bool(wait_for(cond, timeout))


# -- every refusal: typed, and changes nothing --------------------------------------


def test_forged_signature(svc: ShardService, store: FakeStore) -> None:
    refused(svc, store, push("tv-1", 1, k=b"x" * 32), "unauthorized")


def test_unsigned(svc: ShardService, store: FakeStore) -> None:
    refused(svc, store, encode(Push("tv-1", 1, int(NOW * 1000), (b"r",))), "unauthorized")


def test_replay_of_older_sequence(svc: ShardService, store: FakeStore, wall: Wall) -> None:
    assert isinstance(call(svc, push("tv-1", 10)), PushAck)
    wall.t += 120
    refused(svc, store, push("tv-1", 9, ts=wall.t), "replay")


def test_same_sequence_other_reports_is_replay(svc: ShardService, store: FakeStore) -> None:
    call(svc, push("tv-1", 10))
    refused(svc, store, push("tv-1", 10, (b"different",)), "replay")


def test_stale_timestamp(svc: ShardService, store: FakeStore) -> None:
    refused(svc, store, push("tv-1", 1, ts=NOW - 301), "stale")
    refused(svc, store, push("tv-1", 1, ts=NOW + 301), "stale")


def test_over_rate(svc: ShardService, store: FakeStore, wall: Wall) -> None:
    call(svc, push("tv-1", 1))
    wall.t += 20
    reply = refused(svc, store, push("tv-1", 2, ts=wall.t), "rate_limited")
    assert reply.retry_after_s == pytest.approx(40.0)
    wall.t += 40
    assert isinstance(call(svc, push("tv-1", 2, ts=wall.t)), PushAck)


def test_oversized_frame(svc: ShardService, store: FakeStore) -> None:
    # encode() refuses to build it, so pack the frame by hand.
    frame = msgpack.packb([Push.TAG, 1, "tv-1", 1, int(NOW * 1000), [b"x" * 200] * 5,
                           b"s" * 32], use_bin_type=True)
    assert len(frame) > 1024
    refused(svc, store, frame, "too_large")


def test_malformed_envelope(svc: ShardService, store: FakeStore) -> None:
    for frame in (b"", b"\x00garbage", b"\x93\x0a\x01\xc0", encode(Health())[:-1] + b"\xc1"):
        refused(svc, store, frame, "bad_request")
    refused(svc, store, b"\x92\x63\x01", "unknown_type")
    refused(svc, store, encode(PushAck(1, 1)), "unknown_type")


def test_too_many_sealed_reports(store: FakeStore, wall: Wall) -> None:
    with ShardService(settings(max_reports=2), store, FLEET, DEDUP, wall_clock=wall) as svc:
        refused(svc, store, push("tv-1", 1, (b"a", b"b", b"c")), "too_large")


def test_oversized_sealed_report(store: FakeStore, wall: Wall) -> None:
    with ShardService(settings(max_report_bytes=32), store, FLEET, DEDUP,
                      wall_clock=wall) as svc:
        refused(svc, store, push("tv-1", 1, (b"x" * 33,)), "too_large")


def test_unknown_device_registered_mode(store: FakeStore, wall: Wall) -> None:
    with ShardService(settings(registration="registered"), store, FLEET, DEDUP,
                      wall_clock=wall) as svc:
        reply = refused(svc, store, push("tv-new", 1), "unauthorized")
        assert "unknown device" in reply.message
        svc.register_devices(["tv-new"])
        assert isinstance(call(svc, push("tv-new", 1)), PushAck)


def test_revoked_device(svc: ShardService, store: FakeStore) -> None:
    svc.register_devices(["tv-bad"], revoke=True)
    reply = refused(svc, store, push("tv-bad", 1), "unauthorized")
    assert "revoked" in reply.message
    pull = encode(sign(Pull("tv-bad", 0, int(NOW * 1000), 0, "eu"), key("tv-bad")))
    refused(svc, store, pull, "unauthorized")


def test_malformed_device_id_is_bad_request(svc: ShardService, store: FakeStore) -> None:
    raw = bytearray(push("tv-1", 1))
    raw[raw.index(b"tv-1")] = ord(" ")  # not an identifier character
    refused(svc, store, bytes(raw), "bad_request")


def test_storage_full_is_unavailable(store: FakeStore, wall: Wall) -> None:
    with ShardService(settings(max_stored_reports=1), store, FLEET, DEDUP,
                      wall_clock=wall) as svc:
        call(svc, push("tv-1", 1))
        refused(svc, store, push("tv-2", 1), "unavailable")


def test_follower_names_leader_device_address(svc: ShardService, store: FakeStore) -> None:
    store.leading = False
    store.leader_addr = OTHER_RAFT
    reply = refused(svc, store, push("tv-1", 1), "not_leader")
    assert reply.leader == "tcp://127.0.0.1:7411"
    store.leader_addr = None
    assert refused(svc, store, push("tv-1", 1), "not_leader").leader is None


def test_follower_learns_leader_address_from_replicated_advert(
        store: FakeStore, wall: Wall) -> None:
    s = settings(peer_addresses=())
    with ShardService(s, store, FLEET, DEDUP, wall_clock=wall) as leader_svc:
        _wait(lambda: leader_svc.device_address(SELF_RAFT) and store.submits >= 1)
    with store.read() as kv:
        assert state.advertised(kv) == {SELF_RAFT: "tcp://127.0.0.1:7410"}
    other = replace(s, advertise="tcp://127.0.0.1:7411",
                    raft=RaftSettings(self_address=OTHER_RAFT, partners=(SELF_RAFT,)))
    store.leading = False
    with ShardService(other, store, FLEET, DEDUP, wall_clock=wall) as follower:
        assert call(follower, push("tv-1", 1)).leader == "tcp://127.0.0.1:7410"


# -- pulls, heartbeats, health, forwarding -----------------------------------------


def emb(i: int) -> bytes:
    return bytes([i % 50]) * EMBEDDING_BYTES


def pull(device: str, since: int, region: str = "eu", want: tuple[str, ...] = ()) -> bytes:
    return encode(sign(Pull(device, 0, int(NOW * 1000), since, region, want), key(device)))


def test_pull_serves_deltas_by_cursor(svc: ShardService, store: FakeStore) -> None:
    update = GlobalUpdate(
        1, neighbours=(("t1", (("t2", 0.5),)), ("t2", (("t1", 0.5),))),
        popularity=(("t1", 3.0),), trends=(("eu", (("t1", 2.0),)), ("us", (("t2", 1.0),))),
        new_content=(NewContent("c1", "Fresh", emb(1)),))
    assert svc.set_global_update(update) == ("applied", 6)
    resp = call(svc, pull("tv-1", 0))
    assert isinstance(resp, PullResp) and resp.global_version == 6
    assert dict(resp.neighbours) == {"t1": (("t2", 0.5),), "t2": (("t1", 0.5),)}
    assert resp.popularity == (("t1", 3.0),)
    assert resp.trends == (("t1", 2.0),)  # only the device's region
    assert [c.id for c in resp.new_content] == ["c1"]
    assert call(svc, pull("tv-2", 6)) == PullResp(6)
    assert call(svc, pull("tv-5", 0)) == resp  # the same delta again: from the cache
    assert svc.stats()["requests"]["pull.cached"] == 1
    svc.set_global_update(GlobalUpdate(2, popularity=(("t1", 4.0),)))
    delta = call(svc, pull("tv-3", 6))
    assert delta == PullResp(7, popularity=(("t1", 4.0),))
    # A cursor from the future (state rebuilt) starts over.
    assert call(svc, pull("tv-4", 999)).global_version == 7


def test_pull_in_bounded_pieces(store: FakeStore, wall: Wall) -> None:
    with ShardService(settings(pull_max_records=3, pull_burst=100), store, FLEET, DEDUP,
                      wall_clock=wall) as svc:
        titles = tuple((f"t{i:02d}", float(i)) for i in range(10))
        svc.set_global_update(GlobalUpdate(1, popularity=titles))
        got: dict[str, float] = {}
        cursor, pulls = 0, 0
        while pulls < 10:
            resp = call(svc, pull("tv-1", cursor))
            pulls += 1
            assert len(resp.popularity) <= 3
            got.update(resp.popularity)
            if resp.global_version == cursor:
                break
            cursor = resp.global_version
        assert got == dict(titles) and cursor == 10 and pulls == 5


def test_pull_want_returns_known_content(svc: ShardService) -> None:
    svc.set_global_update(GlobalUpdate(1, new_content=(NewContent("c1", "A", emb(1)),
                                                       NewContent("c2", "B", emb(2)))))
    resp = call(svc, pull("tv-1", 2, want=("c1", "nope")))
    assert [c.id for c in resp.new_content] == ["c1"]


def test_pull_forged_and_rate_limited(svc: ShardService, store: FakeStore) -> None:
    forged = encode(sign(Pull("tv-1", 0, int(NOW * 1000), 0, "eu"), b"y" * 32))
    refused(svc, store, forged, "unauthorized")
    for _ in range(10):  # the burst
        assert isinstance(call(svc, pull("tv-9", 0)), PullResp)
    assert refused(svc, store, pull("tv-9", 0), "rate_limited").retry_after_s


def test_heartbeat_and_health(svc: ShardService, store: FakeStore) -> None:
    svc.set_global_update(GlobalUpdate(1, popularity=(("t", 1.0),)))
    hb = encode(sign(Heartbeat("tv-1", int(NOW * 1000), 0), key("tv-1")))
    assert call(svc, hb) == HeartbeatAck(1)
    bad = encode(sign(Heartbeat("tv-1", int(NOW * 1000), 0), b"z" * 32))
    refused(svc, store, bad, "unauthorized")
    h = call(svc, encode(Health()))
    assert isinstance(h, HealthReply) and h.role == "shard" and h.status == "ok"


def test_take_batch_only_from_k_devices(svc: ShardService, store: FakeStore) -> None:
    for i in range(2):
        call(svc, push(f"tv-{i}", 1, (b"a%d" % i, b"b%d" % i)))
    assert svc.take_batch() is None  # 2 devices < k = 3
    assert svc.take_batch(min_devices=1) is None  # k is a floor
    call(svc, push("tv-2", 1, (b"a2",)))
    batch = svc.take_batch()
    assert batch is not None and batch.devices == 3
    assert sorted(batch.reports) == [b"a0", b"a1", b"a2", b"b0", b"b1"]
    assert svc.release_batch(batch.bucket) == ("released", 5)
    assert svc.take_batch() is None


def test_close_open_bucket_on_demand_never_below_k(svc: ShardService, store: FakeStore) -> None:
    for i in range(2):
        call(svc, push(f"tv-{i}", 1, (b"r%d" % i,)))
    assert svc.close_open_bucket()[0] == "open"  # 2 devices < k = 3: stays open
    assert svc.take_batch() is None
    call(svc, push("tv-2", 1, (b"r2",)))  # the third device closes it by itself
    assert svc.take_batch() is not None
    call(svc, push("tv-3", 1, (b"r3",)))
    assert svc.close_open_bucket(min_devices=1)[0] == "open"  # k is a floor here too


def test_pull_announces_the_hubs_current_key(svc: ShardService, store: FakeStore) -> None:
    before = call(svc, pull("tv-1", 0))
    assert (before.hub_key_id, before.hub_public_key) == (0, b"")
    svc.set_global_update(GlobalUpdate(1, popularity=(("t", 1.0),), hub_key_id=7,
                                       hub_public_key=b"\x07" * 32))
    r = call(svc, pull("tv-2", 0))
    assert (r.hub_key_id, r.hub_public_key) == (7, b"\x07" * 32)
    # Even a pull with nothing new names the key: the TV always seals to the current one.
    again = call(svc, pull("tv-3", r.global_version))
    assert again.hub_key_id == 7 and again.popularity == ()


def test_raft_status_and_stats(svc: ShardService) -> None:
    call(svc, push("tv-1", 1))
    st = svc.raft_status()
    assert st["role"] == "leader" and st["leader_device_address"] == "tcp://127.0.0.1:7410"
    stats = svc.stats()
    assert stats["state"]["pushes"] == 1 and stats["requests"]["ok.PushAck"] == 1


# -- the device client -------------------------------------------------------------


def client_for(svc: ShardService, device: str, wall: Wall, **kw: Any) -> DeviceClient:
    return DeviceClient(("tcp://127.0.0.1:7410",), device, key(device),
                        ClientSettings(backoff_s=0.0, backoff_max_s=0.0), wall=wall,
                        requester=InMemoryRequester(svc.handle, svc.on_error), **kw)


def test_client_push_pull_heartbeat(svc: ShardService, wall: Wall) -> None:
    c = client_for(svc, "tv-1", wall)
    ack = c.push([b"r1"])
    assert ack.seq == c.last_seq
    svc.set_global_update(GlobalUpdate(1, popularity=(("t", 1.0),)))
    assert c.pull(0, "eu").popularity == (("t", 1.0),)
    assert c.heartbeat().global_version == 1
    with pytest.raises(RateLimited) as exc:
        c.push([b"r2"])
    assert exc.value.retry_after_s is not None and exc.value.retry_after_s > 50


def test_client_typed_errors(svc: ShardService, wall: Wall) -> None:
    bad = DeviceClient("tcp://x:1", "tv-1", b"k" * 32, wall=wall,
                       requester=InMemoryRequester(svc.handle, svc.on_error))
    with pytest.raises(Unauthorized):
        bad.push([b"r"])
    skewed = client_for(svc, "tv-2", Wall())
    skewed._wall = lambda: NOW - 1000
    with pytest.raises(Stale):
        skewed.push([b"r"])


def test_client_retries_unavailable_with_same_seq(
        svc: ShardService, store: FakeStore, wall: Wall) -> None:
    store.faults.append((LeaderChanged("x"), True))
    c = client_for(svc, "tv-1", wall)
    ack = c.push([b"once"])
    assert c.counts["retries"] == 1
    with store.read() as kv:
        assert list(state.all_reports(kv)) == [b"once"]
        # The retry found the push applied and got its ack without a second proposal.
        assert state.counters(kv)["pushes"] == 1
    assert ack.seq == c.last_seq


def test_client_seq_persists_and_pending_is_reused(
        svc: ShardService, store: FakeStore, wall: Wall, tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    c = client_for(svc, "tv-1", wall, state_path=path)
    first = c.push([b"a"]).seq
    # A push that fails for good (no leader anywhere) stays pending, on disk.
    store.leading, store.leader_addr = False, None
    wall.t += 61
    with pytest.raises(Exception, match="no leader"):
        c.push([b"b"])
    pending = c.last_seq
    assert pending > first
    c.close()
    # Restart with the clock stepped back: the same push reuses its number, and a
    # new one still gets a higher number than anything used before.
    store.leading, store.leader_addr = True, SELF_RAFT
    wall.t -= 0.5
    c2 = client_for(svc, "tv-1", wall, state_path=path)
    assert c2.last_seq == pending
    assert c2.push([b"b"]).seq == pending
    wall.t += 61
    assert c2.push([b"c"]).seq > pending
    with store.read() as kv:
        assert sorted(state.all_reports(kv)) == [b"a", b"b", b"c"]
    reply = call(svc, push("tv-1", first, (b"a",), ts=wall.t))
    assert isinstance(reply.to_error(), Replay)  # an old number is refused by the shard
