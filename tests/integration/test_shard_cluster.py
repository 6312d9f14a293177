"""A shard group of three real processes on 127.0.0.1, driven by simulated devices.

Each scenario ends by stopping every replica and reading its LMDB file: the state
hashes are equal and every acknowledged push is stored exactly once (a push that
failed at the device may or may not be stored, but never twice).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shard_harness import FLEET_KEY, Load, ShardCluster, cluster, verify_exactly_once, wait_for

from omega.client import ClientSettings, DeviceClient
from omega.errors import OmegaError
from omega.protocol import (
    ErrorReply,
    Health,
    HealthReply,
    PullResp,
    Push,
    PushAck,
    decode,
    derive_device_key,
    encode,
    sign,
)
from omega.transport import RpcClient, TransportSettings


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ShardCluster]:
    with cluster(tmp_path) as c:
        c.start()
        yield c


def client(c: ShardCluster, name: str, endpoints: list[str] | None = None) -> DeviceClient:
    return DeviceClient(endpoints or c.endpoints, name, derive_device_key(FLEET_KEY, name),
                        ClientSettings(request_timeout_s=2.0, call_timeout_s=20.0, attempts=10))


def test_group_forms_redirects_writes_and_serves_reads_anywhere(group: ShardCluster) -> None:
    leader = group.wait_leader()
    followers = [n for n in group.nodes if n is not leader]
    # A device that only knows a follower is sent to the leader's device address.
    with client(group, "tv-first", [followers[0].listen]) as dev:
        ack = dev.push([b"hello"])
        assert ack.seq == dev.last_seq
        assert dev.counts["redirects"] >= 1
    st = leader.status()
    assert st is not None and st["role"] == "leader" and st["leader"] == leader.raft
    if "leader_device_address" in st:  # ShardService.raft_status() (the runner's ctl raft)
        assert st["leader_device_address"] == leader.listen
    # Followers answer reads from their own applied state, without redirecting.
    for f in followers:
        with client(group, f"tv-read-{f.name}", [f.listen]) as dev:
            assert isinstance(dev.pull(0, "eu"), PullResp)
            assert dev.heartbeat().global_version == 0
            assert dev.counts["redirects"] == 0
    group.wait_converged()
    result = verify_exactly_once(group, {b"hello": ack.seq})
    assert result["stored"] == 1


@pytest.mark.slow
def test_pushes_from_1000_devices_are_committed(group: ShardCluster) -> None:
    load = Load(group.endpoints, 1000, threads=32, pushes_per_device=1).start()
    wait_for(load.done, 180, "1000 devices pushed")
    r = load.stop()
    assert len(r.acked) == 1000, r.errors
    group.wait_converged()
    result = verify_exactly_once(group, r.acked)
    assert result["stored"] == 1000
    # Group commit: far fewer Raft entries than pushes.
    assert result["applied_index"] < 1000 / 2, result


@pytest.mark.slow
@pytest.mark.chaos
def test_sigkill_leader_five_times_under_load(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        c.start()
        load = Load(c.endpoints, 300, threads=16, max_pushes=50_000).start()
        elections: list[float] = []
        try:
            for _ in range(5):
                load.wait_acked(load.acked + 100, 60)
                leader = c.wait_leader()
                survivors = [n for n in c.nodes if n is not leader]
                leader.kill()
                t0 = time.monotonic()
                wait_for(lambda s=survivors: any((n.status() or {}).get("role") == "leader"
                                                 for n in s), 30, "a new leader")
                elections.append(time.monotonic() - t0)
                leader.spawn()  # it rejoins as a follower and catches up
                c.wait_leader(60)
            load.wait_acked(load.acked + 100, 60)
        finally:
            r = load.stop()
        print(f"\nnew leader after SIGKILL: median {statistics.median(elections):.3f} s, "
              f"max {max(elections):.3f} s ({len(elections)} kills); acked {len(r.acked)}, "
              f"failed attempts {r.failed} {dict(r.errors)}")
        assert len(elections) == 5
        assert max(elections) < 5.0  # the target (< 1 s) is measured by bench/shard.py
        c.wait_converged()
        result = verify_exactly_once(c, r.acked)
        assert result["stored"] >= len(r.acked) > 500


def raw_push(rpc: RpcClient, device: str, report: bytes, timeout: float) -> object:
    msg = sign(Push(device, 1, int(time.time() * 1000), (report,)),
               derive_device_key(FLEET_KEY, device))
    try:
        return decode(rpc.request(encode(msg), timeout_s=timeout))
    except OmegaError as exc:
        return exc


@pytest.mark.slow
@pytest.mark.chaos
def test_paused_leader_acknowledges_nothing_it_cannot_commit(tmp_path: Path) -> None:
    # The runner: its `ctl shard` shows the pushes pending inside the leader.
    with cluster(tmp_path, launcher="runner") as c:
        c.start()
        load = Load(c.endpoints, 100, threads=8, max_pushes=20_000).start()
        try:
            load.wait_acked(100, 60)
            old = c.wait_leader()
            others = [n for n in c.nodes if n is not old]
            # Connect first, so that pushes reach the leader's socket whatever happens next.
            rpc = RpcClient(old.listen, TransportSettings(request_timeout_s=30.0, retries=0,
                                                          send_timeout_s=30.0))
            assert isinstance(decode(rpc.request(encode(Health()))), HealthReply)
            # With its followers frozen, the leader can propose but not commit: these
            # pushes are pending inside it when it is paused in turn.
            for f in others:
                f.pause()
            replies: dict[bytes, object] = {}

            def send(i: int) -> None:
                replies[b"paused-%d" % i] = raw_push(rpc, f"paused{i:03d}", b"paused-%d" % i,
                                                     30.0)

            senders = [threading.Thread(target=send, args=(i,)) for i in range(20)]
            for t in senders:
                t.start()
            wait_for(lambda: ((old.ctl("shard") or {}).get("inflight", 0) >= 20
                              or not all(t.is_alive() for t in senders)), 10,
                     "pushes pending in the leader")
            old.pause()
            for f in others:
                f.resume()
            new = c.wait_leader(30, among=others)
            load.wait_acked(load.acked + 50, 60)  # the group goes on without it
            old.resume()
            for t in senders:
                t.join(40)
            rpc.close()
            # It steps down and follows the new leader.
            wait_for(lambda: (old.status() or {}).get("role") == "follower"
                     and (old.status() or {}).get("leader") == new.raft, 30,
                     "the old leader to step down")
            stats = old.ctl("shard") or {}
            load.wait_acked(load.acked + 50, 60)
        finally:
            r = load.stop()
        assert len(replies) == 20
        acked_paused = {m: 1 for m, rep in replies.items() if isinstance(rep, PushAck)}
        refused = [rep for rep in replies.values() if isinstance(rep, ErrorReply)]
        print(f"\npaused leader: {len(acked_paused)} acks, {len(refused)} refusals "
              f"{sorted({e.code for e in refused})}, "
              f"{20 - len(acked_paused) - len(refused)} transport errors; "
              f"its group commit: {stats.get('group_commit')}")
        assert all(e.code in ("not_leader", "unavailable") for e in refused)
        c.wait_converged()
        # Whatever it acknowledged is committed on every replica, exactly once.
        verify_exactly_once(c, {**r.acked, **acked_paused})


@pytest.mark.slow
@pytest.mark.chaos
def test_kill_all_three_and_restart_ten_times_under_load(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        c.start()
        load = Load(c.endpoints, 200, threads=12, max_pushes=50_000).start()
        try:
            for _ in range(10):
                load.wait_acked(load.acked + 40, 90)
                for n in c.nodes:
                    n.kill()
                for n in c.nodes:
                    n.spawn()
                c.wait_leader(90)
            load.wait_acked(load.acked + 40, 90)
        finally:
            r = load.stop()
        print(f"\nkill-all x10: acked {len(r.acked)}, failed attempts {r.failed} "
              f"{dict(r.errors)}")
        c.wait_converged()
        result = verify_exactly_once(c, r.acked)
        assert result["counters"]["pushes"] == result["stored"]
