"""Every secret a role reads is checked when the config is loaded: present, and at
least 16 bytes; the error names the secret, where it came from, and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from omega.config import MIN_SECRET_BYTES, ShardConfig, TvConfig, load_config, read_role_secrets
from omega.errors import ConfigError

GOOD = "0123456789abcdef-good"
ENV = {"OMEGA_FLEET_KEY": GOOD, "OMEGA_DEDUP_SECRET": GOOD, "OMEGA_RAFT_PASSWORD": GOOD}


def shard(tmp_path: Path, extra: str = "") -> ShardConfig:
    cfg = tmp_path / "shard.toml"
    cfg.write_text(f'role = "shard"\n{extra}')
    loaded = load_config("shard", cfg)
    assert isinstance(loaded, ShardConfig)
    return loaded


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def test_good_secrets_are_returned(tmp_path: Path) -> None:
    assert read_role_secrets(shard(tmp_path)) == {
        "fleet_key": GOOD.encode(), "dedup_secret": GOOD.encode(), "raft_password": GOOD.encode()}


@pytest.mark.parametrize(("var", "key"), [("OMEGA_FLEET_KEY", "secrets.fleet_key"),
                                          ("OMEGA_DEDUP_SECRET", "secrets.dedup_secret"),
                                          ("OMEGA_RAFT_PASSWORD", "secrets.raft_password")])
def test_a_short_secret_names_itself_and_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, key: str
) -> None:
    monkeypatch.setenv(var, "x" * (MIN_SECRET_BYTES - 1))
    with pytest.raises(ConfigError) as err:
        read_role_secrets(shard(tmp_path))
    assert err.value.key == key
    assert f"environment variable {var} holds 15 bytes" in err.value.message
    assert "at least 16 bytes" in err.value.message


def test_a_missing_secret_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMEGA_FLEET_KEY")
    with pytest.raises(ConfigError, match="secret not set: provide environment variable "
                                          "OMEGA_FLEET_KEY"):
        read_role_secrets(shard(tmp_path))


def test_a_short_secret_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMEGA_DEDUP_SECRET")
    secret = tmp_path / "dedup.key"
    secret.write_text("short\n")
    cfg = shard(tmp_path, f'[secrets.dedup_secret]\nenv = ""\nfile = "{secret}"\n')
    with pytest.raises(ConfigError) as err:
        read_role_secrets(cfg)
    assert err.value.key == "secrets.dedup_secret"
    assert f"file {secret} holds 5 bytes" in err.value.message


def test_a_tv_reads_no_shard_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ENV:
        monkeypatch.delenv(k)
    assert read_role_secrets(TvConfig()) == {}
