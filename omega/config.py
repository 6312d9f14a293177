"""Node configuration: one TOML file per role, loaded once into frozen dataclasses.

``load_config(role, path, overrides)`` is the only entry point. It reads the file
with ``tomllib``, validates every key against the dataclasses below (and the
settings classes each package owns), applies command-line overrides, and raises
``ConfigError(file, key, message)`` for anything wrong; the CLI turns that into
exit code 2. The result is passed down through constructors: there are no globals.

Secrets never live in the TOML: the file names an environment variable or a file
(``[secrets]``), and ``read_secret`` resolves it when a component needs it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from omega.errors import ConfigError
from omega.ops.http.settings import AdminSettings
from omega.schema import SettingError, load, require
from omega.sync.settings import SyncSettings
from omega.transport_settings import TransportSettings

if TYPE_CHECKING:
    from omega.brain.settings import BrainSettings
    from omega.federation.settings import AggregatorSettings, HubSettings
    from omega.shard.settings import ShardSettings

Role = Literal["tv", "shard", "aggregator", "hub"]
ROLES: tuple[Role, ...] = ("tv", "shard", "aggregator", "hub")
LogLevel = Literal["debug", "info", "warning", "error"]

_ADDRESS_SCHEMES = ("tcp://", "ipc://", "tls+tcp://", "inproc://")


def check_nng_address(value: str, key: str, *, allow_empty: bool = False) -> None:
    """Reject an nng address with no scheme we serve (``tcp://``, ``ipc://``...)."""
    if allow_empty and value == "":
        return
    require(
        value.startswith(_ADDRESS_SCHEMES),
        key,
        f"must start with one of {', '.join(_ADDRESS_SCHEMES)}, got {value!r}",
    )


@dataclass(frozen=True)
class NodeSettings:
    """What every node has: a name, a data directory and its sockets."""

    name: str = "omega-node"
    data_dir: Path = Path("var/node")
    #: The node's network endpoint (device-facing for shards). Empty: none (a TV).
    listen: str = ""
    #: Local control socket for `omega-node ctl` and `omega-node tv`. Empty:
    #: ipc://<data_dir>/control.sock. Only ipc:// is accepted: the socket can stop the
    #: node and kill its actors, so it is a file only the node's user may open (0600).
    control: str = ""
    log_level: LogLevel = "info"
    #: SIGTERM/SIGINT → all actors stopped and the process gone within this time.
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        require(0 < len(self.name) <= 64, "name", "must be 1-64 characters")
        check_nng_address(self.listen, "listen", allow_empty=True)
        require(
            self.control == "" or self.control.startswith("ipc://"),
            "control",
            f"must be an ipc:// address (a local socket file), got {self.control!r}: the "
            "control socket can stop the node, so it is never served on a network",
        )
        require(
            0.1 <= self.shutdown_timeout_s <= 120,
            "shutdown_timeout_s",
            "must be between 0.1 and 120 seconds",
        )

    @property
    def control_address(self) -> str:
        if self.control:
            return self.control
        return f"ipc://{self.data_dir.resolve() / 'control.sock'}"


@dataclass(frozen=True)
class SupervisionSettings:
    """Restart intensity of the role's root supervisor (OTP's intensity/period)."""

    max_restarts: int = 5
    within_s: float = 10.0

    def __post_init__(self) -> None:
        require(0 <= self.max_restarts <= 1000, "max_restarts", "must be between 0 and 1000")
        require(0 < self.within_s <= 3600, "within_s", "must be between 0 and 3600 seconds")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from: an environment variable, else a file."""

    env: str = ""
    file: str = ""


@dataclass(frozen=True)
class SecretsSettings:
    """Names of the secrets' sources — never the secrets themselves."""

    fleet_key: SecretRef = SecretRef(env="OMEGA_FLEET_KEY")
    raft_password: SecretRef = SecretRef(env="OMEGA_RAFT_PASSWORD")
    dedup_secret: SecretRef = SecretRef(env="OMEGA_DEDUP_SECRET")
    #: Admin API bearer tokens, one per role (read < operator < admin); a role
    #: whose token is not set cannot be used.
    read_token: SecretRef = SecretRef(env="OMEGA_READ_TOKEN")
    operator_token: SecretRef = SecretRef(env="OMEGA_OPERATOR_TOKEN")
    admin_token: SecretRef = SecretRef(env="OMEGA_ADMIN_TOKEN")
    #: The TV's own device key (64 hex digits, `omega-node tv provision`), read when
    #: ``[sync] enabled``.
    device_key: SecretRef = SecretRef(env="OMEGA_DEVICE_KEY")


@dataclass(frozen=True)
class BaseConfig:
    node: NodeSettings = NodeSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    secrets: SecretsSettings = SecretsSettings()
    transport: TransportSettings = field(default_factory=TransportSettings)
    #: Set by the loader, not by the file.
    role: Role = field(default="tv", init=False)
    source: str = field(default="<defaults>", init=False)


def _brain() -> BrainSettings:
    from omega.brain.settings import BrainSettings

    return BrainSettings()


def _shard() -> ShardSettings:
    from omega.shard.settings import ShardSettings

    return ShardSettings()


def _aggregator() -> AggregatorSettings:
    from omega.federation.settings import AggregatorSettings

    return AggregatorSettings()


def _hub() -> HubSettings:
    from omega.federation.settings import HubSettings

    return HubSettings()


@dataclass(frozen=True)
class TvConfig(BaseConfig):
    brain: BrainSettings = field(default_factory=_brain)
    sync: SyncSettings = field(default_factory=SyncSettings)


@dataclass(frozen=True)
class ShardConfig(BaseConfig):
    shard: ShardSettings = field(default_factory=_shard)
    admin: AdminSettings = field(default_factory=AdminSettings)


@dataclass(frozen=True)
class AggregatorConfig(BaseConfig):
    aggregator: AggregatorSettings = field(default_factory=_aggregator)
    admin: AdminSettings = field(default_factory=AdminSettings)


@dataclass(frozen=True)
class HubConfig(BaseConfig):
    hub: HubSettings = field(default_factory=_hub)
    admin: AdminSettings = field(default_factory=AdminSettings)


NodeConfig = TvConfig | ShardConfig | AggregatorConfig | HubConfig


def config_class(role: Role) -> type[NodeConfig]:
    # Each role's settings modules are imported lazily (through the default
    # factories), so that a shard never loads onnxruntime.
    return {"tv": TvConfig, "shard": ShardConfig, "aggregator": AggregatorConfig, "hub": HubConfig}[
        role
    ]


@dataclass(frozen=True)
class Overrides:
    """Command-line flags that win over the file."""

    data_dir: Path | None = None
    listen: str | None = None
    log_level: str | None = None
    name: str | None = None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file or raise ConfigError naming it."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "<file>", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "<file>", "is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(str(path), "<file>", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "<syntax>", f"not valid TOML: {exc}") from None


def load_config(role: Role, path: Path | None, overrides: Overrides = Overrides()) -> NodeConfig:
    """Load and validate the config of ``role`` from ``path`` (None: built-in defaults)."""
    if role not in ROLES:
        raise ConfigError(str(path), "--role", f"unknown role {role!r}; one of {', '.join(ROLES)}")
    source = str(path) if path is not None else "<defaults>"
    table: dict[str, Any] = read_toml(path) if path is not None else {}
    declared = table.pop("role", role)
    if declared != role:
        raise ConfigError(source, "role", f"file is for role {declared!r}, started as {role!r}")
    node_table = dict(table.get("node", {})) if isinstance(table.get("node"), dict) else None
    if node_table is not None:
        for key, value in (
            ("data_dir", overrides.data_dir),
            ("listen", overrides.listen),
            ("log_level", overrides.log_level),
            ("name", overrides.name),
        ):
            if value is not None:
                node_table[key] = str(value)
        table["node"] = node_table
    elif any(v is not None for v in vars(overrides).values()):
        table["node"] = {k: str(v) for k, v in vars(overrides).items() if v is not None}
    cls = config_class(role)
    try:
        cfg = load(cls, table)
    except SettingError as exc:
        raise ConfigError(source, exc.key, exc.message) from None
    object.__setattr__(cfg, "role", role)
    object.__setattr__(cfg, "source", source)
    return cfg


def read_secret(ref: SecretRef, *, source: str, key: str, required: bool = True) -> bytes | None:
    """Resolve a secret from its environment variable, else its file.

    Raises ConfigError naming the config key when a required secret is absent, so
    the operator knows which variable or file to provide.
    """
    if ref.env and os.environ.get(ref.env):
        return os.environ[ref.env].encode()
    if ref.file:
        try:
            data = Path(ref.file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                source, key, f"cannot read secret file {ref.file!r}: {exc.strerror}"
            ) from None
        if data:
            return data
    if required:
        where = " or ".join(
            x
            for x in (
                f"environment variable {ref.env}" if ref.env else "",
                f"file {ref.file}" if ref.file else "",
            )
            if x
        )
        raise ConfigError(
            source, key, f"secret not set: provide {where or 'an env or file source'}"
        )
    return None


#: Every secret a role reads must be at least this long: the fleet key and the dedup
#: secret key HMACs, and the Raft password guards a port that speaks pickle.
MIN_SECRET_BYTES = 16


def read_role_secrets(cfg: NodeConfig) -> dict[str, bytes]:
    """Resolve and check the secrets the role needs, before any actor starts.

    Raises ConfigError naming the secret and the rule (the CLI exits 2).
    """
    out: dict[str, bytes] = {}
    wanted: list[tuple[str, bool]] = []
    if isinstance(cfg, ShardConfig):
        wanted = [("fleet_key", True), ("dedup_secret", True),
                  ("raft_password", not cfg.shard.raft.dev_mode)]
    elif isinstance(cfg, HubConfig):
        # The hub is a Raft group too: its port speaks pickle, and its state holds the
        # private report keys.
        wanted = [("raft_password", not cfg.hub.raft.dev_mode)]
    for name, required in wanted:
        key = f"secrets.{name}"
        ref: SecretRef = getattr(cfg.secrets, name)
        value = read_secret(ref, source=cfg.source, key=key, required=required)
        if value is None:
            continue
        if len(value) < MIN_SECRET_BYTES:
            raise ConfigError(
                cfg.source, key,
                f"{_where(ref)} holds {len(value)} bytes; it must be at least "
                f"{MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 16`)",
            )
        if name == "raft_password":
            from omega.raft.settings import password_weakness

            weakness = password_weakness(value)
            if weakness is not None:
                raise ConfigError(cfg.source, key, f"{_where(ref)}: {weakness} (the Raft "
                                  f"port speaks pickle: never weaken it)")
        out[name] = value
    if isinstance(cfg, TvConfig) and cfg.sync.enabled:
        # The TV's own provisioned key (never the fleet key: a TV does not hold it).
        value = read_secret(cfg.secrets.device_key, source=cfg.source, key="secrets.device_key")
        assert value is not None
        out["device_key"] = value
    admin = getattr(cfg, "admin", None)
    if isinstance(admin, AdminSettings) and admin.enabled:
        out.update(read_admin_tokens(cfg))
    return out


def read_admin_tokens(cfg: NodeConfig) -> dict[str, bytes]:
    """The admin API's bearer tokens (each optional), checked for length and for being
    different from each other (ConfigError otherwise)."""
    from omega.ops.http.auth import SECRET_OF_ROLE, Tokens

    out: dict[str, bytes] = {}
    for key in SECRET_OF_ROLE.values():
        value = read_secret(getattr(cfg.secrets, key), source=cfg.source,
                            key=f"secrets.{key}", required=False)
        if value is not None:
            out[key] = value
    Tokens.from_secrets(out, cfg.source)
    return out


def _where(ref: SecretRef) -> str:
    if ref.env and os.environ.get(ref.env):
        return f"environment variable {ref.env}"
    return f"file {ref.file}"
