"""Admin API test helpers: node configs with ``[admin]``, tokens, in-process nodes.

``in_process_node`` starts a role's real supervision tree in this process (a real
single-replica shard: PySyncObj + LMDB + nng sockets), so Starlette's TestClient
can call the app built over it; the process tests start ``omega-node`` itself.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omega.config import NodeConfig, load_config
from omega.protocol import derive_device_key
from tests.nodeproc import TEST_SECRETS, free_ports, wait_for

TOKENS = {
    "read_token": b"read-token-for-tests-0123456789",
    "operator_token": b"operator-token-for-tests-0123456",
    "admin_token": b"admin-token-for-tests-0123456789",
}
ROLE_TOKEN = {"read": TOKENS["read_token"], "operator": TOKENS["operator_token"],
              "admin": TOKENS["admin_token"]}
ADMIN_ENV = {
    "OMEGA_READ_TOKEN": TOKENS["read_token"].decode(),
    "OMEGA_OPERATOR_TOKEN": TOKENS["operator_token"].decode(),
    "OMEGA_ADMIN_TOKEN": TOKENS["admin_token"].decode(),
}
FLEET_KEY = TEST_SECRETS["OMEGA_FLEET_KEY"].encode()


def device_key(device_id: str) -> bytes:
    return derive_device_key(FLEET_KEY, device_id)


def _admin_table(admin_port: int | None, shards: list[str] | None = None, **extra: Any) -> str:
    listen = f"127.0.0.1:{admin_port}" if admin_port is not None else ""
    lines = ["[admin]", f'listen = "{listen}"', "poll_s = 0.5"]
    if shards:
        lines.append("shards = [" + ", ".join(json.dumps(s) for s in shards) + "]")
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def shard_toml(tmp: Path, name: str = "shard-a", *, admin_port: int | None = None,
               listen_port: int | None = None, raft_port: int | None = None,
               **admin: Any) -> tuple[Path, str]:
    """A single-replica shard's config; returns (file, device-facing address)."""
    listen_port, raft_port = listen_port or free_ports(1)[0], raft_port or free_ports(1)[0]
    listen = f"tcp://127.0.0.1:{listen_port}"
    path = tmp / f"{name}.toml"
    path.write_text(f"""role = "shard"
[node]
name = "{name}"
data_dir = "{tmp / name}"
listen = "{listen}"
[shard]
advertise = "{listen}"
rate_limit_interval_s = 0.0
pull_interval_s = 0.0
[shard.raft]
self_address = "127.0.0.1:{raft_port}"
partners = []
""" + _admin_table(admin_port, **admin))
    return path, listen


def hub_toml(tmp: Path, *, admin_port: int | None = None, shards: list[str] | None = None,
             name: str = "hub", role: str = "hub", **admin: Any) -> Path:
    path = tmp / f"{name}.toml"
    # The hub is a Raft group (of one here): its port must be a free one.
    raft = f'[hub.raft]\nself_address = "127.0.0.1:{free_ports(1)[0]}"\n' if role == "hub" else ""
    path.write_text(f"""role = "{role}"
[node]
name = "{name}"
data_dir = "{tmp / name}"
""" + raft + _admin_table(admin_port, shards, **admin))
    return path


def secrets_for(cfg: NodeConfig) -> dict[str, bytes]:
    out = dict(TOKENS)
    if cfg.role in ("shard", "hub"):
        out["raft_password"] = TEST_SECRETS["OMEGA_RAFT_PASSWORD"].encode()
    if cfg.role == "shard":
        out.update({"fleet_key": FLEET_KEY,
                    "dedup_secret": TEST_SECRETS["OMEGA_DEDUP_SECRET"].encode(),
                    "raft_password": TEST_SECRETS["OMEGA_RAFT_PASSWORD"].encode()})
    return out


@dataclass
class InProcess:
    cfg: NodeConfig
    ctx: Any
    handle: Any


@contextlib.contextmanager
def in_process_node(role: str, config: Path) -> Iterator[InProcess]:
    """The role's real tree, started here (admin child included only if configured)."""
    from omega.actors import start_tree
    from omega.actors.context import NodeContext
    from omega.actors.roles import tree_for
    from omega.ops.metrics import NodeMetrics

    cfg = load_config(role, config)  # type: ignore[arg-type]
    cfg.node.data_dir.mkdir(parents=True, exist_ok=True)
    ctx = NodeContext(cfg=cfg, secrets=secrets_for(cfg))
    ctx.publish("metrics", NodeMetrics.for_node(ctx))
    handle = start_tree(tree_for(cfg, ctx))
    ctx.handle = handle
    try:
        if role == "shard":
            wait_for(lambda: ctx.resource("shard") is not None
                     and ctx.resource("shard").raft_status().get("role") == "leader", 60,
                     "the single replica to lead")
        if role == "hub":
            wait_for(lambda: ctx.resource("federation") is not None
                     and ctx.resource("federation").status().get("leader"), 60,
                     "the hub's single replica to lead")
        yield InProcess(cfg, ctx, handle)
    finally:
        assert handle.stop(timeout=15)


def http(method: str, url: str, token: bytes | None = None, body: Any = None,
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request (stdlib only): (status, headers, body); errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", "Bearer " + token.decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, token: bytes | None = None) -> Any:
    """GET → parsed JSON, or None when the node does not answer 200 (yet): for waits."""
    try:
        status, _, body = http("GET", url, token, timeout=2.0)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def get_text(url: str) -> str | None:
    try:
        status, _, body = http("GET", url, timeout=2.0)
    except OSError:
        return None
    return body.decode() if status == 200 else None
