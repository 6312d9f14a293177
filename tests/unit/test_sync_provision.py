"""``omega-node tv provision``: one command writes a config the TV node loads and a
device key file only its owner can read, derived from the fleet key (which the TV
never gets)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from omega.config import TvConfig, load_config, read_secret
from omega.federation.keysign import HubSigner
from omega.federation.report import HubKey
from omega.protocol import derive_device_key
from omega.sync.link import device_key_from_secret
from omega.sync.shardmap import pick
from tests.nodeproc import run_cli

FLEET = "provision-test-fleet-key-0123456789"
SIGNER = HubSigner.generate()


def test_provision_writes_a_loadable_config_and_an_owner_only_key(tmp_path: Path) -> None:
    hub = HubKey.generate(4)
    out = tmp_path / "tv9"
    res = run_cli(["tv", "provision", "--out", str(out), "--device-id", "tv-0009",
                   "--region", "eu", "--group", "g1=tcp://10.0.0.1:7410,tcp://10.0.0.2:7410",
                   "--group", "g2=tcp://10.0.1.1:7410", "--group", "us/u1=tcp://10.9.0.1:7410",
                   "--hub-key-id", "4", "--hub-public-key", hub.public.hex(),
                   "--hub-verify-key", SIGNER.verify_key.hex()],
                  env={**os.environ, "OMEGA_FLEET_KEY": FLEET})
    assert res.returncode == 0, res.stderr
    key_file = out / "device.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cfg = load_config("tv", out / "tv.toml")
    assert isinstance(cfg, TvConfig)
    s = cfg.sync
    assert s.enabled and s.device_id == "tv-0009" and s.region == "eu"
    assert s.hub_key_id == 4 and bytes.fromhex(s.hub_public_key) == hub.public
    assert bytes.fromhex(s.hub_verify_key) == SIGNER.verify_key
    assert [g.name for g in s.all_groups()] == ["g1", "g2", "u1"]
    secret = read_secret(cfg.secrets.device_key, source="t", key="device_key")
    assert secret is not None
    assert device_key_from_secret(secret) == derive_device_key(FLEET.encode(), "tv-0009")
    assert FLEET not in (out / "tv.toml").read_text() + key_file.read_text()
    assert f'"group": "{pick(s.all_groups(), "tv-0009", "eu").name}"' in res.stdout
    # Once is enough: a second run refuses unless forced.
    again = run_cli(["tv", "provision", "--out", str(out), "--device-id", "tv-0009",
                     "--region", "eu", "--group", "g1=tcp://10.0.0.1:7410",
                     "--hub-key-id", "4", "--hub-public-key", hub.public.hex(),
                     "--hub-verify-key", SIGNER.verify_key.hex()],
                    env={**os.environ, "OMEGA_FLEET_KEY": FLEET})
    assert again.returncode == 2 and "already provisioned" in again.stderr


@pytest.mark.parametrize("args,needle", [
    (["--group", "g1"], "NAME=tcp"),
    (["--group", "eu/g1=tcp://h:1", "--region", "asia"], "no group serves"),
    (["--group", "g1=http://h:1"], "endpoints"),
    (["--group", "g1=tcp://h:1", "--hub-verify-key", "ab" * 31], "hub_verify_key"),
    (["--group", "g1=tcp://h:1", "--hub-verify-key", "not-hex"], "--hub-verify-key"),
])
def test_provision_refuses_bad_input_naming_it(tmp_path: Path, args: list[str],
                                               needle: str) -> None:
    hub = HubKey.generate(1)
    base = ["tv", "provision", "--out", str(tmp_path / "x"), "--device-id", "tv1",
            "--hub-key-id", "1", "--hub-public-key", hub.public.hex()]
    if "--region" not in args:
        base += ["--region", "eu"]
    if "--hub-verify-key" not in args:
        base += ["--hub-verify-key", SIGNER.verify_key.hex()]
    res = run_cli(base + args, env={**os.environ, "OMEGA_FLEET_KEY": FLEET})
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert not (tmp_path / "x" / "device.key").exists()


def test_a_bad_device_key_secret_says_how_to_fix_it() -> None:
    from omega.errors import ConfigError

    with pytest.raises(ConfigError, match="tv provision"):
        device_key_from_secret(b"not-hex")
