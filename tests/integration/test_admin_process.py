"""The admin API of real ``omega-node`` processes over HTTP (uvicorn in the admin actor):
a shard, an aggregator and a hub that watches the shard; ``/metrics`` of every role read
by prometheus-client's own parser; a TV's metrics over its control socket."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omega.client import DeviceClient
from omega.ops.metrics import names as N
from tests.helpers_admin import (
    ADMIN_ENV,
    ROLE_TOKEN,
    device_key,
    get_json,
    get_text,
    http,
    hub_toml,
    shard_toml,
)
from tests.nodeproc import REPO, free_ports, kill_all, node_env, run_cli, start_node, stop, wait_for

READ = ROLE_TOKEN["read"]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus-client (raises on a bad line)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def up(url: str) -> bool:
    try:
        return http("GET", url + "/api/v1/health", timeout=1.0)[0] == 200
    except OSError:
        return False


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    kill_all(started)


def test_shard_aggregator_hub_over_http(tmp_path: Path,
                                        procs: list[subprocess.Popen[bytes]]) -> None:
    shard_admin, hub_admin, agg_admin = free_ports(3)
    shard_url = f"http://127.0.0.1:{shard_admin}"
    hub_url = f"http://127.0.0.1:{hub_admin}"
    agg_url = f"http://127.0.0.1:{agg_admin}"
    env = node_env(ADMIN_ENV)
    cfg, listen = shard_toml(tmp_path, admin_port=shard_admin, region="eu")
    procs.append(start_node(["--role", "shard", "--config", str(cfg)], env=env,
                            log=tmp_path / "shard.log"))
    procs.append(start_node(["--role", "hub", "--config",
                             str(hub_toml(tmp_path, admin_port=hub_admin, shards=[shard_url]))],
                            env=env, log=tmp_path / "hub.log"))
    procs.append(start_node(["--role", "aggregator", "--config",
                             str(hub_toml(tmp_path, admin_port=agg_admin, name="agg",
                                          role="aggregator"))],
                            env=env, log=tmp_path / "agg.log"))
    for url in (shard_url, hub_url, agg_url):
        wait_for(lambda url=url: up(url), 60, f"admin API at {url}")
    health = json.loads(http("GET", shard_url + "/api/v1/health")[2])
    wait_for(lambda: (get_json(shard_url + "/api/v1/health") or {}).get("status") == "ok",
             60, "the shard to elect itself")
    assert health["role"] == "shard"
    # No token: 401 and no data; the read token: data.
    status, _, body = http("GET", hub_url + "/api/v1/shards")
    assert status == 401 and set(json.loads(body)) == {"error", "detail"}
    for d in range(5):
        with DeviceClient(listen, f"tv-{d}", device_key(f"tv-{d}")) as dev:
            dev.push([b"r" * 64])
            dev.pull(0, "eu")

    def hub_sees_devices() -> Any:
        shards = (get_json(hub_url + "/api/v1/shards", READ) or {}).get("shards")
        return shards if shards and shards[0]["devices"] == 5 else None

    shards = wait_for(hub_sees_devices, 30, "the hub to see the shard's devices")
    assert shards[0]["id"] == "shard-a" and shards[0]["status"] == "ok"
    assert shards[0]["source"] == shard_url and shards[0]["region"] == "eu"
    stats = json.loads(http("GET", hub_url + "/api/v1/shards/shard-a/stats", READ)[2])
    assert stats["reports_received"] >= 5

    # /metrics on every role, with live values, parsed by prometheus-client.
    shard_m = metric_samples(http("GET", shard_url + "/metrics")[2].decode())
    assert shard_m[(N.DEVICES_ACTIVE, ())] == 5
    assert shard_m[(N.PATTERNS_RECEIVED + "_total", ())] >= 5
    assert shard_m[(N.SYNC_LATENCY_MS + "_count", (("kind", "push"),))] >= 5
    assert shard_m[(N.SYNC_LATENCY_MS + "_count", (("kind", "read"),))] >= 5
    assert shard_m[(N.SHARD_HEALTH, (("shard", "shard-a"),))] == 1
    assert shard_m[(N.REQUESTS + "_total", (("reply", "PushAck"),))] >= 5
    hub_m = wait_for(lambda: (m := metric_samples(get_text(hub_url + "/metrics") or ""))
                     .get((N.DEVICES_ACTIVE, ())) == 5 and m, 30, "hub metrics")
    assert hub_m[(N.SHARD_HEALTH, (("shard", "shard-a"),))] == 1
    assert hub_m[(N.PATTERNS_RECEIVED + "_total", ())] >= 5
    assert hub_m[(N.RAFT_TERM, ())] >= 1 and hub_m[(N.RAFT_IS_LEADER, ())] == 1  # its group
    agg_m = metric_samples(http("GET", agg_url + "/metrics")[2].decode())
    assert agg_m[(N.NODE_INFO, (("name", "agg"), ("role", "aggregator"),
                                ("version", health["version"])))] == 1

    # The admin actor is supervised: kill it, it comes back and serves again.
    control = f"ipc://{(tmp_path / 'hub').resolve()}/control.sock"
    out = run_cli(["ctl", "--control", control, "kill", "admin"], env=env)
    assert out.returncode == 0, out.stderr

    def restarted() -> bool:
        tree = get_json(hub_url + "/api/v1/node/tree", READ)
        return bool(tree) and any(c["name"] == "admin" and c["restarts"] >= 1
                                  for c in tree["children"])

    wait_for(restarted, 30, "the admin actor to restart")
    hub_m = metric_samples(http("GET", hub_url + "/metrics")[2].decode())
    assert hub_m[(N.SUPERVISOR_RESTARTS + "_total", (("child", "hub.admin"),))] >= 1
    for p in procs:
        code, _ = stop(p)
        assert code == 0
    for name in ("shard", "hub", "agg"):
        log = (tmp_path / f"{name}.log").read_text()
        for token in ROLE_TOKEN.values():
            assert token.decode() not in log


def test_admin_port_in_use_fails_the_start_with_a_clear_message(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = start_node(["--role", "hub", "--config", str(hub_toml(tmp_path, admin_port=port))],
                          env=node_env(ADMIN_ENV), log=tmp_path / "hub.log")
        procs.append(proc)
        assert proc.wait(60) == 2
    log = (tmp_path / "hub.log").read_text()
    assert "admin.listen" in log and f"127.0.0.1:{port} is already in use" in log


def test_weak_token_is_a_config_error(tmp_path: Path) -> None:
    cfg = hub_toml(tmp_path, admin_port=free_ports(1)[0])
    out = run_cli(["--role", "hub", "--config", str(cfg)],
                  env=node_env({"OMEGA_READ_TOKEN": "short"}))
    assert out.returncode == 2
    assert "secrets.read_token" in out.stderr and "short" not in out.stderr


@pytest.mark.model
def test_tv_metrics_over_the_control_socket(tmp_path: Path,
                                            procs: list[subprocess.Popen[bytes]]) -> None:
    data = tmp_path / "tv"
    control = f"ipc://{data.resolve()}/control.sock"
    procs.append(start_node(["--role", "tv", "--config", str(REPO / "config" / "tv.toml"),
                             "--data-dir", str(data)], log=tmp_path / "tv.log"))
    wait_for(lambda: run_cli(["ctl", "--control", control, "health"]).returncode == 0, 180,
             "tv up")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps({"id": f"m{i}", "title": f"Film {i}",
                                             "genres": ["Drama"]}) for i in range(20)))
    for args in (["import-catalog", str(catalog)], ["observe", "m1", "0.9"],
                 ["observe", "m2", "0.95"], ["recommend", "-k", "5"]):
        out = run_cli(["tv", "--control", control, *args], timeout=180)
        assert out.returncode == 0, out.stderr
    out = run_cli(["ctl", "--control", control, "metrics"])
    assert out.returncode == 0, out.stderr
    m = metric_samples(out.stdout)
    assert m[(N.BRAIN_INFERENCE_MS + "_count", ())] == 1
    assert m[(N.BRAIN_RECOMMENDATIONS + "_total", ())] == 5
    assert m[(N.BRAIN_PATTERNS, ())] >= 1
    assert m[(N.BRAIN_MEMORY_MB, ())] > 50
