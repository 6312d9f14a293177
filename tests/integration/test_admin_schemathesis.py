"""schemathesis against the OpenAPI document served by a live shard and a live hub:
every generated request (valid, invalid, without a token) must get an answer the
document allows — no server error, no response that breaks its schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_admin import ADMIN_ENV, ROLE_TOKEN, http, hub_toml, shard_toml
from tests.nodeproc import free_ports, kill_all, node_env, start_node, stop, wait_for

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
#: Writes are rate-limited; a high limit lets schemathesis reach the logic behind them.
OPEN_LIMITS = {"write_per_min": 100_000.0, "write_burst": 1000}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, str]]:
    shard_admin, hub_admin = free_ports(2)
    env = node_env(ADMIN_ENV)
    cfg, _ = shard_toml(tmp_path, admin_port=shard_admin, **OPEN_LIMITS)
    shard_url = f"http://127.0.0.1:{shard_admin}"
    procs = [start_node(["--role", "shard", "--config", str(cfg)], env=env,
                        log=tmp_path / "shard.log"),
             start_node(["--role", "hub", "--config",
                         str(hub_toml(tmp_path, admin_port=hub_admin, shards=[shard_url],
                                      **OPEN_LIMITS))], env=env, log=tmp_path / "hub.log")]
    urls = {"shard": shard_url, "hub": f"http://127.0.0.1:{hub_admin}"}
    try:
        for url in urls.values():
            wait_for(lambda url=url: http("GET", url + "/api/v1/health", timeout=1)[2]
                     .find(b'"ok"') >= 0 if _up(url) else False, 60, url)
        yield urls
        for p in procs:
            assert stop(p)[0] == 0
    finally:
        kill_all(procs)


def _up(url: str) -> bool:
    try:
        http("GET", url + "/api/v1/health", timeout=1)
        return True
    except OSError:
        return False


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed")
def test_schemathesis_finds_nothing(nodes: dict[str, str], tmp_path: Path) -> None:
    for role, url in nodes.items():
        out = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{url}/api/v1/openapi.json", "--checks", "all",
             "-H", "Authorization: Bearer " + ROLE_TOKEN["admin"].decode(),
             "--max-examples", "15", "--seed", "1", "--no-color",
             # The hub's first content add loads the embedder (seconds, more under load):
             # schemathesis's 10 s default calls that a network error or a slow response.
             "--request-timeout", "120", "--max-response-time", "120"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache goes there
        tail = out.stdout[-3000:]
        assert out.returncode == 0, f"{role}:\n{tail}\n{out.stderr[-2000:]}"
        assert " passed" in tail and "failed" not in tail.split("SUMMARY")[-1], tail
