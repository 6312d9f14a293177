"""Provisioning a TV: its device id, device key, region, shard map and the hub's
keys, in one step (``omega-node tv provision``).

Run where the fleet key is (the factory or the operator's machine), never on the
TV: the TV gets only its own device key, ``HMAC(fleet_key, device_id)`` — what the
shard derives to check its signatures — in a file readable by its owner alone,
and a config whose ``[secrets] device_key`` points at that file. The hub's keys
are public (``ctl federation`` on the hub prints them as a ``provision`` line):
its current report key and id, which the TV seals to, and its long-term verify
key, the TV's trust anchor — later report keys reach the TV through its shard,
and it adopts one only if the hub's signature over it verifies with this key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omega.errors import ConfigError
from omega.federation.keysign import MalformedAnnouncement, parse_verify_key
from omega.federation.report import HubKey
from omega.protocol import derive_device_key
from omega.sync.settings import ShardGroup, SyncSettings, Tier

__all__ = ["Provisioned", "parse_group", "provision", "toml_value"]


def parse_group(spec: str, region: str) -> ShardGroup:
    """``NAME=ENDPOINT[,ENDPOINT...]`` (optionally ``REGION/NAME=...``) → a shard group."""
    name, sep, eps = spec.partition("=")
    if not sep or not eps:
        raise ConfigError("--group", spec, "expected NAME=tcp://host:port[,tcp://...]")
    grp_region, slash, grp_name = name.rpartition("/")
    try:
        return ShardGroup(grp_name if slash else name, grp_region if slash else region,
                          tuple(e.strip() for e in eps.split(",") if e.strip()))
    except ValueError as exc:
        raise ConfigError("--group", spec, str(exc)) from None


@dataclass(frozen=True)
class Provisioned:
    config: Path
    key_file: Path
    settings: SyncSettings


def toml_value(value: object) -> str:
    """A TOML literal for a bool, string, number or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def provision(out_dir: Path, *, device_id: str, region: str, groups: Sequence[ShardGroup],
              hub: HubKey, hub_verify_key: bytes | str | None, fleet_key: bytes,
              tier: Tier = "active", data_dir: Path | None = None,
              force: bool = False) -> Provisioned:
    """Write ``tv.toml`` and ``device.key`` (mode 0600) for one TV into ``out_dir``.

    ``hub_verify_key``: the hub's Ed25519 verify key, 32 bytes or 64 hex digits
    (``ctl federation`` on the hub).
    ``None`` makes a TV that keeps ``hub`` for ever: it refuses every rotation,
    since it cannot tell the hub's next key from a shard's (tests only).
    """
    if len(fleet_key) < 16:
        raise ConfigError("--fleet-key", "fleet_key", "the fleet key is at least 16 bytes")
    verify_hex = ""
    if hub_verify_key is not None:
        try:
            verify_hex = parse_verify_key(hub_verify_key).hex()
        except MalformedAnnouncement as exc:
            raise ConfigError("--hub-verify-key", "hub_verify_key", exc.message) from None
    settings = SyncSettings(enabled=True, device_id=device_id, region=region,
                            groups=tuple(groups), tier=tier, hub_key_id=hub.key_id,
                            hub_public_key=hub.public.hex(), hub_verify_key=verify_hex)
    if not any(g.region == region for g in groups):
        raise ConfigError("--group", "groups", f"no group serves region {region!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg, key_file = out_dir / "tv.toml", out_dir / "device.key"
    if not force and (cfg.exists() or key_file.exists()):
        raise ConfigError(str(out_dir), "tv.toml", "already provisioned here (use --force)")
    key = derive_device_key(fleet_key, device_id)
    # Owner-only from its creation: the key never sits readable on disk.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    os.chmod(key_file, 0o600)
    data = (data_dir or out_dir / "data").resolve()
    lines = [
        "# Written by `omega-node tv provision`. The device key is in device.key (0600).",
        'role = "tv"', "", "[node]", f"name = {toml_value(device_id)}",
        f"data_dir = {toml_value(str(data))}", 'listen = ""', "",
        "[secrets.device_key]", f"file = {toml_value(str(key_file.resolve()))}", "",
        "[sync]", "enabled = true", f"device_id = {toml_value(device_id)}",
        f"region = {toml_value(region)}", f"tier = {toml_value(tier)}",
        f"hub_key_id = {hub.key_id}", f"hub_public_key = {toml_value(hub.public.hex())}",
    ]
    if verify_hex:
        lines.append(f"hub_verify_key = {toml_value(verify_hex)}")
    for g in groups:
        lines += ["", "[[sync.groups]]", f"name = {toml_value(g.name)}",
                  f"region = {toml_value(g.region)}",
                  f"endpoints = {toml_value(list(g.endpoints))}"]
    tmp = cfg.with_name(cfg.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, cfg)
    return Provisioned(cfg, key_file, settings)
