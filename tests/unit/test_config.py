"""Config: strict loading, the error names the file and the key, overrides, secrets."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from omega.config import (
    ROLES,
    AggregatorConfig,
    HubConfig,
    Overrides,
    SecretRef,
    load_config,
    read_secret,
)
from omega.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("role", ROLES)
def test_shipped_config_for_every_role_loads(role: str) -> None:
    cfg = load_config(role, REPO / "config" / f"{role}.toml")  # type: ignore[arg-type]
    assert cfg.role == role
    assert cfg.source.endswith(f"{role}.toml")


def test_defaults_without_a_file() -> None:
    cfg = load_config("hub", None)
    assert isinstance(cfg, HubConfig)
    assert cfg.source == "<defaults>"


def test_config_is_frozen() -> None:
    cfg = load_config("hub", None)
    with pytest.raises(FrozenInstanceError):
        cfg.node = cfg.node  # type: ignore[misc]


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, '[node]\nname = "a"\nlisten_adress = "tcp://127.0.0.1:1"\n')
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.file == str(p)
    assert err.value.key == "node.listen_adress"
    assert "unknown key" in err.value.message


def test_unknown_table(tmp_path: Path) -> None:
    p = write(tmp_path, "[shard]\nmax_reports = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config("aggregator", p)
    assert err.value.key == "shard"


def test_wrong_type(tmp_path: Path) -> None:
    p = write(tmp_path, '[supervision]\nmax_restarts = "five"\n')
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "supervision.max_restarts"
    assert "integer" in err.value.message


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    p = write(tmp_path, "[supervision]\nmax_restarts = true\n")
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "supervision.max_restarts"


def test_out_of_range(tmp_path: Path) -> None:
    p = write(tmp_path, "[node]\nshutdown_timeout_s = 0.0\n")
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "node.shutdown_timeout_s"


def test_bad_address(tmp_path: Path) -> None:
    p = write(tmp_path, '[node]\nlisten = "127.0.0.1:7000"\n')
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "node.listen"


def test_bad_literal(tmp_path: Path) -> None:
    p = write(tmp_path, '[node]\nlog_level = "loud"\n')
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "node.log_level"


def test_nested_settings_of_another_package_are_checked(tmp_path: Path) -> None:
    p = write(tmp_path, "[transport]\nworkers = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "transport.workers"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("hub", tmp_path / "nope.toml")
    assert "not found" in err.value.message
    assert err.value.file.endswith("nope.toml")


def test_syntax_error(tmp_path: Path) -> None:
    p = write(tmp_path, "[node\n")
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "<syntax>"


def test_role_mismatch(tmp_path: Path) -> None:
    p = write(tmp_path, 'role = "shard"\n')
    with pytest.raises(ConfigError) as err:
        load_config("hub", p)
    assert err.value.key == "role"


def test_overrides_win(tmp_path: Path) -> None:
    p = write(tmp_path, '[node]\nname = "agg"\nlisten = "tcp://127.0.0.1:1000"\n')
    cfg = load_config(
        "aggregator",
        p,
        Overrides(data_dir=tmp_path / "d", listen="tcp://127.0.0.1:2000", log_level="debug"),
    )
    assert isinstance(cfg, AggregatorConfig)
    assert cfg.node.listen == "tcp://127.0.0.1:2000"
    assert cfg.node.data_dir == tmp_path / "d"
    assert cfg.node.log_level == "debug"
    assert cfg.node.name == "agg"


def test_overrides_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("hub", None, Overrides(listen="nowhere"))
    assert err.value.key == "node.listen"


def test_control_address_defaults_into_data_dir(tmp_path: Path) -> None:
    cfg = load_config("hub", None, Overrides(data_dir=tmp_path))
    assert cfg.node.control_address == f"ipc://{tmp_path.resolve()}/control.sock"


def test_secret_from_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    ref = SecretRef(env="OMEGA_TEST_SECRET", file=str(f))
    monkeypatch.delenv("OMEGA_TEST_SECRET", raising=False)
    assert read_secret(ref, source="x.toml", key="secrets.k") == b"from-file"
    monkeypatch.setenv("OMEGA_TEST_SECRET", "from-env")
    assert read_secret(ref, source="x.toml", key="secrets.k") == b"from-env"


def test_missing_secret_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMEGA_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError) as err:
        read_secret(SecretRef(env="OMEGA_TEST_SECRET"), source="x.toml", key="secrets.fleet_key")
    assert err.value.key == "secrets.fleet_key"
    assert "OMEGA_TEST_SECRET" in err.value.message
    assert (
        read_secret(SecretRef(env="OMEGA_TEST_SECRET"), source="x", key="k", required=False) is None
    )
