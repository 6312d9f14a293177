"""A real TV node (``omega-node --role tv``, the real brain and model) syncing with a
real 3-replica shard group (tests/integration/shard_harness.py), on 127.0.0.1."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from omega.federation.report import HubKey
from omega.protocol import (
    CatalogEntry,
    TvImportCatalog,
    TvObserve,
    TvOk,
    TvStatus,
    derive_device_key,
)
from tests.integration.shard_harness import FLEET_KEY, ShardCluster, _toml
from tests.nodeproc import ask, node_env, start_node
from tests.sync_support import opened_counts

HUB = HubKey.generate(1)


def tv_config(root: Path, endpoints: list[str], device_id: str = "tv-it", **sync: Any) -> Path:
    opts: dict[str, Any] = {
        "enabled": True, "device_id": device_id, "region": "local", "interval_s": 0.5,
        "crowd_refresh_s": 0.0, "heartbeat_s": 5.0, "backoff_base_s": 0.2, "backoff_max_s": 1.0,
        "hub_key_id": HUB.key_id, "hub_public_key": HUB.public.hex(), **sync}
    lines = [
        'role = "tv"', "[node]", 'name = "tv-it"', f"data_dir = {_toml(str(root / 'tv'))}",
        f"control = {_toml('ipc://' + str(root / 'tv.ctl'))}", 'log_level = "info"',
        "[sync]", *(f"{k} = {_toml(v)}" for k, v in opts.items()),
        "[[sync.groups]]", 'name = "g1"', 'region = "local"',
        f"endpoints = {_toml(endpoints)}",
    ]
    path = root / "tv.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class TvNode:
    def __init__(self, root: Path, endpoints: list[str], device_id: str = "tv-it",
                 **sync: Any) -> None:
        self.root = root
        self.device_id = device_id
        self.cfg = tv_config(root, endpoints, device_id, **sync)
        self.control = "ipc://" + str(root / "tv.ctl")
        self.log = root / "tv.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TvNode:
        key = derive_device_key(FLEET_KEY, self.device_id).hex()  # what `tv provision` writes
        env = node_env({"OMEGA_DEVICE_KEY": key})
        self.proc = start_node(["--role", "tv", "--config", str(self.cfg)], env=env,
                               log=self.log)
        return self

    def status(self) -> dict[str, Any] | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            reply = ask(self.control, TvStatus(), timeout=5.0)
        except Exception:
            return None
        return dict(reply.payload) if isinstance(reply, TvOk) and reply.payload else None

    def import_catalog(self, n: int) -> None:
        items = tuple(CatalogEntry(f"m{i}", f"Film number {i}", ("Drama",), "", 1990 + i, 0)
                      for i in range(n))
        reply = ask(self.control, TvImportCatalog(items=items), timeout=120)
        assert isinstance(reply, TvOk), reply

    def observe(self, cid: str, ts: float, fraction: float = 1.0) -> None:
        reply = ask(self.control, TvObserve(cid, fraction, ts), timeout=30)
        assert isinstance(reply, TvOk), reply

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def real_reports(blobs: Any) -> tuple[int, int]:
    """(real, dummy) among stored reports, opened with the hub's private key."""
    return opened_counts(blobs, HUB)


__all__ = ["HUB", "ShardCluster", "TvNode", "real_reports"]
