"""20,000 handshaked, silent connections from one address against the leader's device port.

Two attacker processes (``flood_attacker.py``, 10,000 connections each, from
127.0.0.2) complete nng's SP handshake and then hold their connections; a
DeviceClient on 127.0.0.1 (another source address: all of 127.0.0.0/8 is this
machine) pushes before and during the flood. Must hold: every push acknowledged,
p99 under 3x the quiet p99, the leader stays leader, and the pressure is visible
in ``ctl shard`` (refusals counted, the attacker's address held at its cap).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from shard_harness import FLEET_KEY, ShardCluster, cluster

from omega.client import ClientSettings, DeviceClient
from omega.protocol import derive_device_key

ATTACKER = Path(__file__).with_name("flood_attacker.py")
PER_PROCESS = 10_000
PUSHES = 300


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def push_latencies(c: ShardCluster, leader_listen: str, tag: str) -> list[float]:
    """``PUSHES`` pushes, one at a time, by 10 devices in turn: each one's seconds."""
    settings = ClientSettings(request_timeout_s=2.0, call_timeout_s=10.0, attempts=5)
    devices = [DeviceClient([leader_listen], f"{tag}{i}", derive_device_key(FLEET_KEY, f"{tag}{i}"),
                            settings) for i in range(10)]
    out = []
    try:
        for n in range(PUSHES):
            dev = devices[n % len(devices)]
            t0 = time.monotonic()
            dev.push([f"{tag}/{n}".encode()])  # raises if not acknowledged
            out.append(time.monotonic() - t0)
    finally:
        for d in devices:
            d.close()
    return out


def test_one_address_holding_20000_connections_does_not_starve_other_devices(
        tmp_path: Path) -> None:
    with cluster(tmp_path, raft={"election_timeout_min_s": 0.3, "election_timeout_max_s": 0.6,
                                 "heartbeat_s": 0.05}) as c:
        leader = c.start()
        host, port = leader.listen[len("tcp://"):].rsplit(":", 1)
        push_latencies(c, leader.listen, "warm")
        quiet = push_latencies(c, leader.listen, "quiet")

        attackers = [subprocess.Popen(
            [sys.executable, str(ATTACKER), host, port, "127.0.0.2", str(PER_PROCESS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
        try:
            opened = []
            for a in attackers:
                assert a.stdout is not None
                line = a.stdout.readline()
                assert line, "an attacker process died"
                opened.append(json.loads(line))
            under_attack = push_latencies(c, leader.listen, "flood")
            shard = leader.ctl("shard")
            status = leader.status()
        finally:
            held = []
            for a in attackers:
                assert a.stdin is not None and a.stdout is not None
                a.stdin.close()
                last = a.stdout.readline()
                held.append(json.loads(last) if last else {})
                a.stdout.close()
                a.wait(60)
        print(f"\nflood: attackers {opened} then {held}; quiet p50/p99 "
              f"{sorted(quiet)[len(quiet) // 2] * 1000:.1f}/{p99(quiet) * 1000:.1f} ms; under "
              f"attack p50/p99 {sorted(under_attack)[len(under_attack) // 2] * 1000:.1f}/"
              f"{p99(under_attack) * 1000:.1f} ms; device_port "
              f"{(shard or {}).get('device_port')}")
        assert len(under_attack) == PUSHES  # every push acknowledged
        assert p99(under_attack) < 3 * p99(quiet), (p99(under_attack), p99(quiet))
        assert status is not None and status["role"] == "leader"
        assert sum(o["handshaked"] for o in opened) >= 2 * PER_PROCESS
        assert shard is not None and "device_port" in shard, shard
        port_stats = shard["device_port"]
        assert port_stats["refused_per_address"] >= 2 * PER_PROCESS - port_stats["max_per_address"]
        assert port_stats["busiest_address"] <= port_stats["max_per_address"]
        assert port_stats["open"] < 2 * port_stats["max_per_address"]


def test_a_leader_whose_device_port_is_saturated_hands_leadership_over(
        tmp_path: Path) -> None:
    # A total cap of 40 connections stands for a descriptor table nearly full.
    with cluster(tmp_path, raft={"election_timeout_min_s": 0.3, "election_timeout_max_s": 0.6,
                                 "heartbeat_s": 0.05},
                 transport={"max_conns": 40, "max_conns_per_address": 0,
                            "idle_timeout_s": 2.0}) as c:
        leader = c.start()
        host, port = leader.listen[len("tcp://"):].rsplit(":", 1)
        attacker = subprocess.Popen(
            [sys.executable, str(ATTACKER), host, port, "127.0.0.2", "60"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert attacker.stdout is not None
            assert attacker.stdout.readline(), "the attacker died"
            new = c.wait_leader(30, among=[n for n in c.nodes if n is not leader])
            assert new is not leader
            st = leader.status()
            assert st is not None and st["step_downs"] >= 1, st
            shard = leader.ctl("shard")
            assert shard is not None and shard["device_port"]["refused_total"] > 0
            assert "hands leadership over" in leader.log_path.read_text()
        finally:
            assert attacker.stdin is not None and attacker.stdout is not None
            attacker.stdin.close()
            attacker.stdout.readline()
            attacker.stdout.close()
            attacker.wait(30)
