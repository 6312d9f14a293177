"""``omega-node local-cluster``: the main job — a local constellation on 127.0.0.1.

It starts real ``omega-node`` processes — a 3-replica shard (Raft over LMDB), an
aggregator, a 3-replica hub and a TV with a real brain, provisioned like a factory
TV (``omega.sync.provision``: device key, shard group, the hub's public key) and
synced by its own SyncAgent — checks each answers health over nng, imports a
catalog into the TV and asks it for recommendations, then drives the shard with
simulated TVs (signed pushes of opaque sealed reports) beside the TV's agent, makes
a release and shows the TV's recommendations after its agent pulled it. Everything
is bounded in time; the nodes are stopped with SIGTERM at the end (or kept with
``--keep`` until Ctrl-C).

Secrets are generated for the run and passed to the children in their environment.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omega.config import read_toml
from omega.errors import ConfigError, OmegaError
from omega.federation.report import HubKey
from omega.netcheck import taken
from omega.schema import SettingError, load, require
from omega.waiting import WaitTimeout, wait_for

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "local-cluster.toml"
#: The demo TV's sync interval (and heartbeat), and the shard's push limit per device.
TV_SYNC_S = 2.0
SHARD_PUSH_LIMIT_S = 1.0


@dataclass(frozen=True)
class ClusterSettings:
    """The ``[cluster]`` table of ``config/local-cluster.toml``."""

    data_dir: Path = Path("var/cluster")
    host: str = "127.0.0.1"
    #: Shard replicas listen on base+10.., their Raft ports on base+20..,
    #: the aggregator on base+30, the hub replicas on base+40.. (Pub/Sub base+45..,
    #: Raft base+50..); admin APIs (HTTP): shard replicas base+60.., hub replicas
    #: base+70.., the aggregator base+80.
    base_port: int = 7400
    shard_replicas: int = 3
    #: Simulated TVs pushing to the shard (signed, rate-limited, de-duplicated).
    simulated_devices: int = 300
    #: Concurrent senders among them.
    concurrency: int = 16
    #: A catalog for the real TV (movies.csv or JSON lines); empty: the built-in demo one.
    catalog: str = ""
    #: Viewing events the demo TV observes (titles of one taste) before it recommends.
    views: int = 3
    #: Whole run's deadline.
    deadline_s: float = 300.0
    #: Hub replicas (a Raft group): listen on base+40.., Pub/Sub base+45.., Raft base+50..
    hub_replicas: int = 3
    #: A shard forwards reports in buckets of at least this many devices.
    k_anonymity: int = 20
    #: ε of the hub's release (central Gaussian noise)...
    release_epsilon: float = 1.0
    #: ...calibrated as for a fleet of this many TVs (0: the real population of the
    #: simulation, whose noise erases a few hundred TVs' signal: DESIGN.md §7).
    simulated_fleet: int = 1_000_000

    def __post_init__(self) -> None:
        require(
            self.host in ("127.0.0.1", "localhost", "::1"),
            "host",
            "the local cluster runs on loopback only",
        )
        require(1024 <= self.base_port <= 65000, "base_port", "must be between 1024 and 65000")
        require(self.shard_replicas in (1, 3, 5), "shard_replicas", "must be 1, 3 or 5")
        require(
            0 <= self.simulated_devices <= 100_000,
            "simulated_devices",
            "must be between 0 and 100000",
        )
        require(1 <= self.concurrency <= 256, "concurrency", "must be between 1 and 256")
        require(0 <= self.views <= 1000, "views", "must be between 0 and 1000")
        require(10 <= self.deadline_s <= 3600, "deadline_s", "must be between 10 and 3600 s")
        require(self.hub_replicas in (1, 3, 5), "hub_replicas", "must be 1, 3 or 5")
        require(1 <= self.k_anonymity <= 10_000, "k_anonymity", "must be between 1 and 10000")
        require(0 < self.release_epsilon <= 100, "release_epsilon", "must be in (0, 100]")
        require(0 <= self.simulated_fleet <= 10**10, "simulated_fleet", "must be >= 0")


@dataclass(frozen=True)
class ClusterFile:
    cluster: ClusterSettings = ClusterSettings()


class ClusterError(OmegaError):
    """The local cluster could not be brought up; the message says which node and why."""


def load_cluster_settings(path: Path) -> ClusterSettings:
    try:
        return load(ClusterFile, read_toml(path)).cluster
    except SettingError as exc:
        raise ConfigError(str(path), exc.key, exc.message) from None


def say(text: str) -> None:
    print(text, flush=True)


class Cluster:
    """The processes of one local constellation and where they listen."""

    def __init__(self, settings: ClusterSettings, root: Path) -> None:
        self.s = settings
        self.root = root
        self.env = dict(os.environ)
        self.env.update(
            {
                "OMEGA_FLEET_KEY": secrets.token_hex(32),
                "OMEGA_DEDUP_SECRET": secrets.token_hex(32),
                "OMEGA_RAFT_PASSWORD": secrets.token_hex(32),
                "OMEGA_READ_TOKEN": secrets.token_urlsafe(24),
                "OMEGA_OPERATOR_TOKEN": secrets.token_urlsafe(24),
                "OMEGA_ADMIN_TOKEN": secrets.token_urlsafe(24),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        h, b = settings.host, settings.base_port
        n = settings.shard_replicas
        self.shard_listen = [f"tcp://{h}:{b + 10 + i}" for i in range(n)]
        self.raft = [f"{h}:{b + 20 + i}" for i in range(n)]
        self.aggregator = f"tcp://{h}:{b + 30}"
        m = settings.hub_replicas
        self.hub_listen = [f"tcp://{h}:{b + 40 + i}" for i in range(m)]
        self.hub_publish = [f"tcp://{h}:{b + 45 + i}" for i in range(m)]
        self.hub_raft = [f"{h}:{b + 50 + i}" for i in range(m)]
        self.hub_names = [f"hub-{i + 1}" for i in range(m)]
        self.hub_controls = [f"ipc://{root / name / 'control.sock'}" for name in self.hub_names]
        self.hub = self.hub_listen[0]
        self.shard_admin = [f"{h}:{b + 60 + i}" for i in range(n)]
        self.hub_admins = [f"{h}:{b + 70 + i}" for i in range(m)]
        self.hub_admin = self.hub_admins[0]
        self.aggregator_admin = f"{h}:{b + 80}"
        self.tv_dir = root / "tv-1"
        self.shard_names = [f"shard-{chr(ord('a') + i)}" for i in range(n)]
        self.shard_controls = [f"ipc://{root / name / 'control.sock'}" for name in self.shard_names]

    def tcp_addresses(self) -> list[tuple[str, str]]:
        """Every TCP address the cluster's nodes will listen on, by node."""
        return [
            *((f"{n} (device port)", a) for n, a in zip(self.shard_names, self.shard_listen,
                                                          strict=True)),
            *((f"{n} (Raft port)", a) for n, a in zip(self.shard_names, self.raft, strict=True)),
            ("aggregator", self.aggregator),
            *((f"{n} (request port)", a) for n, a in zip(self.hub_names, self.hub_listen,
                                                           strict=True)),
            *((f"{n} (Pub/Sub port)", a) for n, a in zip(self.hub_names, self.hub_publish,
                                                          strict=True)),
            *((f"{n} (Raft port)", a) for n, a in zip(self.hub_names, self.hub_raft,
                                                       strict=True)),
            *((f"{n} (admin API)", a) for n, a in zip(self.shard_names, self.shard_admin,
                                                       strict=True)),
            *((f"{n} (admin API)", a) for n, a in zip(self.hub_names, self.hub_admins,
                                                       strict=True)),
            ("aggregator (admin API)", self.aggregator_admin),
        ]

    @property
    def fleet_key(self) -> bytes:
        return self.env["OMEGA_FLEET_KEY"].encode()

    # -- configs ---------------------------------------------------------------------

    def write_configs(self) -> dict[str, Path]:
        cfgdir = self.root / "config"
        cfgdir.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        peers = ", ".join(f'"{r}={ep}"' for r, ep in zip(self.raft, self.shard_listen, strict=True))
        hubs = ", ".join(f'"{ep}"' for ep in self.hub_listen)
        hub_pubs = ", ".join(f'"{ep}"' for ep in self.hub_publish)
        watched = ", ".join(f'"http://{a}"' for a in self.shard_admin)
        for name, listen, raft, admin in zip(self.shard_names, self.shard_listen, self.raft,
                                             self.shard_admin, strict=True):
            partners = ", ".join(f'"{p}"' for p in self.raft if p != raft)
            files[name] = self._write(
                cfgdir / f"{name}.toml",
                f"""role = "shard"
[node]
name = "{name}"
data_dir = "{self.root / name}"
listen = "{listen}"
[transport]
workers = 64
[admin]
listen = "{admin}"
[shard]
advertise = "{listen}"
peer_addresses = [{peers}]
rate_limit_interval_s = {SHARD_PUSH_LIMIT_S}
k_anonymity = {self.s.k_anonymity}
[shard.federation]
aggregator = ["{self.aggregator}"]
hub = [{hubs}]
hub_publish = [{hub_pubs}]
forward_interval_s = 2.0
catch_up_interval_s = 2.0
[shard.raft]
self_address = "{raft}"
partners = [{partners}]
""",
            )
        files["aggregator"] = self._write(
            cfgdir / "aggregator.toml",
            f"""role = "aggregator"
[node]
name = "aggregator-1"
data_dir = "{self.root / "aggregator-1"}"
listen = "{self.aggregator}"
[aggregator]
region = "local"
hub = [{hubs}]
interval_s = 2.0
min_batches = 1
max_wait_s = 0.0
[admin]
listen = "{self.aggregator_admin}"
""",
        )
        fleet = self.s.simulated_fleet
        population = max(1, self.s.simulated_devices)
        release = (f"fleet_size = {fleet}\npopulation = {population}\n"
                   if fleet > population else "")
        hub_peers = ", ".join(f'"{r}={ep}"'
                              for r, ep in zip(self.hub_raft, self.hub_listen, strict=True))
        for name, listen, pub, raft, admin in zip(self.hub_names, self.hub_listen,
                                                  self.hub_publish, self.hub_raft,
                                                  self.hub_admins, strict=True):
            partners = ", ".join(f'"{p}"' for p in self.hub_raft if p != raft)
            files[name] = self._write(
                cfgdir / f"{name}.toml",
                f"""role = "hub"
[node]
name = "{name}"
data_dir = "{self.root / name}"
listen = "{listen}"
[hub]
publish = "{pub}"
peer_addresses = [{hub_peers}]
release_interval_s = 3600.0
[hub.release]
epsilon = {self.s.release_epsilon}
{release}[hub.raft]
self_address = "{raft}"
partners = [{partners}]
election_timeout_min_s = 1.0
election_timeout_max_s = 2.0
heartbeat_s = 0.2
leader_fallback_timeout_s = 6.0
connection_timeout_s = 8.0
[admin]
listen = "{admin}"
shards = [{watched}]
""",
            )
        return files

    def provision_tv(self, hub: HubKey, verify_key: bytes) -> Path:
        """``omega-node tv provision`` for tv-1 (its device key, shard group, the hub's
        key and verify key); the demo shortens its sync interval. Returns its config."""
        from omega.sync.provision import provision
        from omega.sync.settings import ShardGroup

        prov = provision(self.root / "config" / "tv-1", device_id="tv-1", region="local",
                         groups=[ShardGroup("local-a", "local", tuple(self.shard_listen))],
                         hub=hub, hub_verify_key=verify_key,
                         fleet_key=self.fleet_key, data_dir=self.tv_dir, force=True)
        # A sync every ~2 s (the shard takes a push a second from one device here), each
        # pulling, so the demo sees the release within seconds; a real TV syncs every
        # few minutes and pulls the crowd's lists every crowd_refresh_s (6 h).
        text = prov.config.read_text().replace(
            "[sync]\n", f"[sync]\ninterval_s = {TV_SYNC_S}\nheartbeat_s = {TV_SYNC_S}\n"
            "crowd_refresh_s = 0.0\n", 1)
        prov.config.write_text(text)
        return prov.config

    @staticmethod
    def _write(path: Path, text: str) -> Path:
        path.write_text(text)
        return path

    # -- processes -------------------------------------------------------------------

    def start(self, name: str, role: str, config: Path) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("wb") as out:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "omega.cli", "--role", role, "--config", str(config)],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                log = self.root / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
                raise ClusterError(
                    f"{name} exited with code {p.returncode}; last log lines:\n  "
                    + "\n  ".join(tail)
                )

    def stop_all(self, timeout: float = 10.0) -> dict[str, int | None]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            try:
                codes[name] = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
        return codes


def _health(address: str) -> Any:
    from omega.ops.ctl import request
    from omega.protocol import Health

    try:
        return request(address, Health(), 1.0)
    except OmegaError:
        return None


def _healthy(address: str) -> Any:
    reply = _health(address)
    return reply if reply is not None and reply.status == "ok" else None


def _raft_status(control: str) -> Any:
    from omega.ops.ctl import request
    from omega.protocol import CtlReply, CtlRequest

    try:
        reply = request(control, CtlRequest(command="raft", target=""), 2.0)
    except OmegaError:
        return None
    return reply.payload if isinstance(reply, CtlReply) else None


def run_local_cluster(args: argparse.Namespace) -> int:
    settings = load_cluster_settings(args.config or DEFAULT_CONFIG)
    if getattr(args, "base_port", None) is not None:
        settings = replace(settings, base_port=args.base_port)
    root = (args.data_dir or settings.data_dir).resolve()
    cluster = Cluster(settings, root)
    busy = taken(cluster.tcp_addresses())
    if busy:
        # Before anything starts: a node reached on a taken port would be another process.
        name, address = busy[0]
        raise ConfigError(
            str(args.config or DEFAULT_CONFIG), "cluster.base_port",
            f"{address} ({name}) is already in use by another process ({len(busy)} of the "
            "cluster's ports are): stop it, or move the cluster with --base-port N "
            "(or base_port in the file)",
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = cluster.write_configs()
    t0 = time.monotonic()
    say(f"omega local cluster in {root} (logs in {root / 'logs'})")
    try:
        _bring_up(cluster, files)
        now, before = _demo_tv(cluster)
        _crowd_loop(cluster, now, before)
        _rotation(cluster)
        _operations(cluster)
        say(f"all checks passed in {time.monotonic() - t0:.1f} s")
        if getattr(args, "keep", False):
            say("running; Ctrl-C stops every node")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(0.5):
                cluster.check_alive()
    except (OmegaError, WaitTimeout) as exc:  # a node's typed error reply, a deadline
        say(f"FAILED: {exc}")
        cluster.stop_all()
        return 1
    finally:
        codes = cluster.stop_all()
    bad = {k: v for k, v in codes.items() if v != 0}
    say("stopped every node with SIGTERM: " + ("all exited 0" if not bad else f"non-zero: {bad}"))
    return 0 if not bad else 1


def _bring_up(c: Cluster, files: dict[str, Path]) -> None:
    s = c.s
    for name in c.shard_names:
        c.start(name, "shard", files[name])
    c.start("aggregator", "aggregator", files["aggregator"])
    for name in c.hub_names:
        c.start(name, "hub", files[name])
    for name, addr in [
        *zip(c.shard_names, c.shard_listen, strict=True),
        ("aggregator", c.aggregator),
        *zip(c.hub_names, c.hub_listen, strict=True),
    ]:
        reply = wait_for(lambda a=addr: _healthy(a), 60, f"{name} health ok", alive=c.check_alive)  # type: ignore[misc]
        say(f"  {name:<11} {addr:<24} health: {reply.status} (role {reply.role})")
    controls = c.shard_controls

    def leader() -> str | None:
        statuses = [_raft_status(ctl) for ctl in controls]
        leaders = {st["leader"] for st in statuses if st and st.get("has_quorum")}
        roles = [st["role"] for st in statuses if st]
        return next(iter(leaders)) if len(leaders) == 1 and roles.count("leader") == 1 else None

    t = time.monotonic()
    lead = wait_for(leader, 30, "a Raft leader", alive=c.check_alive)
    say(
        f"  raft group of {s.shard_replicas}: leader {lead} (elected within "
        f"{time.monotonic() - t:.2f} s of the first status query)"
    )
    # The TV is provisioned as in the factory: its device key from the fleet key, its
    # shard group, and the hub's current public key as the hub's operator reads it.
    key, verify = wait_for(lambda: _hub_keys(c), 60, "the hub's first key pair and verify key",
                           alive=c.check_alive)
    c.start("tv-1", "tv", c.provision_tv(key, verify))
    say(f"  tv-1 provisioned (`tv provision`): device key, group local-a, hub key "
        f"{key.key_id} ({key.public.hex()[:16]}…), hub verify key {verify.hex()[:16]}… (the "
        f"TV adopts a later hub key only if the hub signed it); its sync agent runs every "
        f"~{TV_SYNC_S:g} s")
    tv_control = f"ipc://{c.tv_dir / 'control.sock'}"
    t = time.monotonic()
    reply = wait_for(
        lambda: _healthy(tv_control), 180, "tv-1 health ok (loads the ONNX model)",
        alive=c.check_alive,
    )
    say(
        f"  tv-1        {'(local ipc socket)':<24} health: {reply.status} (brain ready in "
        f"{time.monotonic() - t:.1f} s)"
    )
    tokens = c.root / "admin-tokens.env"
    tokens.touch(mode=0o600)
    tokens.chmod(0o600)
    tokens.write_text("".join(f"{k}={c.env[k]}\n" for k in (
        "OMEGA_READ_TOKEN", "OMEGA_OPERATOR_TOKEN", "OMEGA_ADMIN_TOKEN")))
    say(f"  dashboard   http://{c.hub_admin}/dashboard (admin API tokens in {tokens})")


def _operations(c: Cluster) -> None:
    """What an operator sees: the hub's dashboard data, a shard's /metrics, the TVs'
    metrics (over the TV's control socket) summed for the fleet."""
    import json
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from omega.ops.ctl import request
    from omega.ops.metrics.fleet import aggregate
    from omega.protocol import CtlReply, CtlRequest

    token = c.env["OMEGA_READ_TOKEN"]

    def get(url: str, auth: bool = True) -> bytes:
        req = urllib.request.Request(url)
        if auth:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return bytes(resp.read())

    want = c.s.simulated_devices

    def dashboard() -> Any:
        try:
            d = json.loads(get(f"http://{c.hub_admin}/api/v1/dashboard"))
        except OSError:
            return None
        ok = [s for s in d["shards"] if s["status"] == "ok"]
        return d if len(ok) == c.s.shard_replicas and d["totals"]["devices"] >= want else None

    d = wait_for(dashboard, 30, "the hub's dashboard to see every replica", alive=c.check_alive)
    t = d["totals"]
    say(f"hub dashboard: {len(d['shards'])} replicas ok, {t['devices']} devices "
        f"({t['devices_active']} active), {t['reports_received']} reports received")
    fed = json.loads(get(f"http://{c.hub_admin}/api/v1/federation"))
    if fed.get("available"):
        eps = fed["epsilon_spent"]
        say(f"hub /api/v1/federation: {fed['rounds']} releases spent, ε total "
            f"{'-' if eps is None else format(eps, '.3g')}, last release v"
            f"{fed['releases'][-1]['version'] if fed['releases'] else '-'}, "
            f"{fed['content_items']} titles in the registry")
    text = get(f"http://{c.shard_admin[0]}/metrics", auth=False).decode()
    families = list(text_string_to_metric_families(text))
    say(f"{c.shard_names[0]} /metrics: {len(families)} families parsed by prometheus-client")
    reply = request(f"ipc://{c.tv_dir / 'control.sock'}", CtlRequest("metrics"), 5.0)
    if isinstance(reply, CtlReply) and isinstance(reply.payload, str):
        fleet = {s.name: s.value for f in text_string_to_metric_families(
            aggregate([reply.payload])) for s in f.samples if not s.labels}
        n = fleet.get("omega_brain_inference_ms_count", 0.0)
        mean = fleet.get("omega_brain_inference_ms_sum", 0.0) / n if n else float("nan")
        say(f"tv fleet ({fleet.get('omega_fleet_tvs', 0):.0f} TV): "
            f"{fleet.get('omega_brain_recommendations_served_total', 0):.0f} recommendations, "
            f"recommend mean {mean:.1f} ms, {fleet.get('omega_brain_patterns_stored', 0):.0f} "
            f"patterns, {fleet.get('omega_brain_memory_mb', 0):.0f} MB")


def _hub_keys(c: Cluster) -> tuple[HubKey, bytes] | None:
    """The hub leader's current public key and its Ed25519 verify key (the TV's trust
    anchor), from ``ctl federation`` status, once it has both."""
    st = _hub_status(c)
    if st is None or not (st.get("current_key") and st.get("verify_key")):
        return None
    for k in st.get("keys", []):
        if k.get("key_id") == st["current_key"] and k.get("public_key"):
            return (HubKey(int(k["key_id"]), bytes.fromhex(k["public_key"])),
                    bytes.fromhex(str(st["verify_key"])))
    return None


def _hub_status(c: Cluster) -> dict[str, Any] | None:
    """``ctl federation`` status of the hub replica that says it leads, if one does."""
    from omega.sim.crowd_demo import try_ctl

    for ctl in c.hub_controls:
        st = try_ctl(ctl, "federation")
        if isinstance(st, dict) and st.get("leader"):
            return st
    return None


def _tv_sync(control: str) -> dict[str, Any]:
    """tv-1's sync agent status (``omega-node tv status``)."""
    from omega.ops.ctl import request
    from omega.protocol import TvOk, TvStatus

    reply = request(control, TvStatus(), 30)
    assert isinstance(reply, TvOk) and isinstance(reply.payload, dict)
    sync = reply.payload.get("sync")
    if not isinstance(sync, dict) or sync.get("enabled") is False:
        raise ClusterError("tv-1 runs without its sync agent: check its [sync] table")
    return sync


def _shard_version(c: Cluster) -> int:
    """The version the shard announces to its TVs (a heartbeat's ack)."""
    from omega.client import DeviceClient
    from omega.protocol import derive_device_key

    client = DeviceClient(c.shard_listen, "probe-1", derive_device_key(c.fleet_key, "probe-1"))
    try:
        return int(client.heartbeat().global_version)
    finally:
        client.close()


def _tv_recommend(control: str, now: float, label: str) -> list[str]:
    from omega.ops.ctl import request
    from omega.protocol import TvRecommend, TvRecommendReply

    rec = request(control, TvRecommend(k=5, timestamp=now), 30)
    assert isinstance(rec, TvRecommendReply)
    say(f"tv-1: recommendations {label}:")
    for rank, ((_cid, score, reason), title) in enumerate(
        zip(rec.items, rec.titles, strict=True), 1
    ):
        say(f"    {rank}. {title:<44} {score:6.3f}  {reason}")
    return [cid for cid, _, _ in rec.items]


def _demo_tv(c: Cluster) -> tuple[float, list[str]]:
    """tv-1 imports the catalog, watches a few titles of one taste and recommends
    (before any release); returns the time it recommends at and its picks."""
    from omega.ops.ctl import request
    from omega.protocol import TvImportCatalog, TvObserve, TvOk, TvRecommend, TvStatus
    from omega.sim.crowd_demo import tastes

    control = f"ipc://{c.tv_dir / 'control.sock'}"
    entries = _catalog(c)
    t = time.monotonic()
    for i in range(0, len(entries), 100):
        reply = request(control, TvImportCatalog(items=tuple(entries[i : i + 100])), 600)
        assert isinstance(reply, TvOk)
    name = Path(c.s.catalog).name if c.s.catalog else "demo_catalog.jsonl"
    say(f"tv-1: imported {len(entries)} titles from {name} in {time.monotonic() - t:.1f} s")
    # Titles of the first taste the simulated fleet shares: the crowd's lists speak to them.
    by_id = {e.id: e for e in entries}
    watched = [by_id[i] for i in tastes(entries)[0][: max(1, c.s.views)]]
    # An hour apart, ending now; after the TV's last view when the data directory
    # is reused (the brain refuses a view older than its last one).
    status = request(control, TvStatus(), 30)
    assert isinstance(status, TvOk) and isinstance(status.payload, dict)
    last = status.payload.get("last_timestamp")
    first = time.time() - 3600 * len(watched)
    if isinstance(last, int | float):
        first = max(first, float(last) + 1)
    for j, e in enumerate(watched):
        request(control, TvObserve(content_id=e.id, watch_fraction=0.95,
                                   timestamp=first + 3600 * j), 30)
    now = first + 3600 * len(watched)
    say(f"tv-1: observed {len(watched)} views: " + ", ".join(e.title for e in watched))
    lat = []
    for _ in range(20):
        t = time.perf_counter()
        request(control, TvRecommend(k=5, timestamp=now), 30)
        lat.append((time.perf_counter() - t) * 1000)
    say(f"tv-1: recommend (k=5) over the local socket: p50 {statistics.median(lat):.1f} ms")
    return now, _tv_recommend(control, now, "before the release")


def _simulate_fleet(c: Cluster, reports_of: Callable[[int], list[bytes]]) -> int:
    """Every simulated TV pushes its sealed reports and pulls; the reports acknowledged."""
    from omega.client import DeviceClient
    from omega.protocol import derive_device_key

    n = c.s.simulated_devices
    if n == 0:
        return 0
    acked = [0]
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def device(i: int) -> None:
        device_id = f"sim-{i:06d}"
        client = DeviceClient(c.shard_listen, device_id, derive_device_key(c.fleet_key, device_id))
        try:
            reports = reports_of(i)
            t = time.perf_counter()
            client.push(reports)
            dt = time.perf_counter() - t
            client.pull(0, "local")
            with lock:
                lat.append(dt * 1000)
                acked[0] += len(reports)
        except OmegaError as exc:
            with lock:
                errors.append(f"{device_id}: {exc}")
        finally:
            client.close()

    t = time.monotonic()
    with ThreadPoolExecutor(c.s.concurrency) as pool:
        list(pool.map(device, range(n)))
    took = time.monotonic() - t
    if errors:
        raise ClusterError(f"{len(errors)} of {n} simulated TVs failed; first: {errors[0]}")
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    say(
        f"fleet: {n} simulated TVs pushed (acknowledged after Raft commit) and pulled in "
        f"{took:.1f} s: {n / took:.0f} syncs/s, push ack p50 {statistics.median(lat):.1f} ms, "
        f"p99 {p99:.1f} ms; {acked[0]} sealed co-view reports"
    )
    _check_replicas(c)
    return acked[0]


def _catalog(c: Cluster) -> list[Any]:
    from omega.catalog_files import read_catalog

    path = Path(c.s.catalog) if c.s.catalog else Path(__file__).with_name("demo_catalog.jsonl")
    return list(read_catalog(path))


def _leader_control(c: Cluster, controls: Sequence[str], what: str) -> str:
    from omega.sim.crowd_demo import try_ctl

    def lead() -> str | None:
        for ctl in controls:
            st = try_ctl(ctl, "federation")
            if isinstance(st, dict) and st.get("leader"):
                return ctl
        return None

    return wait_for(lead, 30, what, alive=c.check_alive)


def _on_leader(c: Cluster, controls: Sequence[str], command: str, target: str = "",
               timeout: float = 120.0) -> Any:
    """``ctl command target`` on the group's leader, again on the new one if it moved."""
    from omega.sim import crowd_demo as cd

    deadline = time.monotonic() + 300
    while True:
        lead = _leader_control(c, controls, "a leader")
        try:
            return cd.ctl(lead, command, target, timeout=timeout)
        except OmegaError as exc:
            if "leader" not in str(exc) or time.monotonic() > deadline:
                raise


def _hub_release(c: Cluster) -> dict[str, Any]:
    """``ctl federation trigger --release N`` for the next release: asked again on a
    new leader, it is answered as made rather than made (and ε spent) twice."""
    def next_version() -> int | None:
        st = _hub_status(c)
        return None if st is None else int(st["counters"]["version"]) + 1

    v = wait_for(next_version, 60, "the hub leader's release version", alive=c.check_alive)
    out: dict[str, Any] = _on_leader(c, c.hub_controls, "federation", f"trigger={v}")
    return out


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else str(x)


def _crowd_loop(c: Cluster, now: float, before: list[str]) -> None:
    """The federation path end to end: the hub's registry; tv-1's sync agent seals its
    co-views and pushes them; the fleet's through shard → aggregator → hub; a
    release; tv-1's agent pulls it and its recommendations change."""
    from omega.sim import crowd_demo as cd

    entries = _catalog(c)
    tv_control = f"ipc://{c.tv_dir / 'control.sock'}"
    t = time.monotonic()
    added = _on_leader(c, c.hub_controls, "content",
                       str(cd.hub_catalog_file(entries, c.root / "content.jsonl")), timeout=600)
    say(f"hub: registered {added['added']} titles (embedded {added['embedded']} with the TV's "
        f"model) in {time.monotonic() - t:.1f} s")
    _hub_release(c)

    def tv_pushed() -> dict[str, Any] | None:
        st = _tv_sync(tv_control)
        built = int(st["reports_built"])
        return st if built > 0 and int(st["reports_pushed"]) >= built else None

    tv = wait_for(tv_pushed, 60, "tv-1's agent to push its sealed reports", alive=c.check_alive)
    tv_real = int(tv["reports_pushed"])
    eps = tv["epsilon_today"]
    say(f"tv-1: its sync agent sealed {tv['reports_built']} co-view reports to hub key "
        f"{tv['hub_key_id']} (local ε {eps['local']:.3g} today) and pushed them to group "
        f"{tv['group']} (every push 8 reports of 73 bytes, dummies fill)")
    key, _ = wait_for(lambda: _hub_keys(c), 30, "the hub's key", alive=c.check_alive)
    groups = cd.tastes(entries)
    pushed = _simulate_fleet(c, lambda i: cd.device_reports(i, groups, key))
    shard = _leader_control(c, c.shard_controls, "a shard leader")
    agg = f"ipc://{c.root / 'aggregator-1' / 'control.sock'}"

    def at_hub() -> tuple[dict[str, Any], dict[str, Any]] | None:
        cd.try_ctl(shard, "federation", "trigger")
        cd.try_ctl(agg, "federation", "trigger")
        fwd = cd.try_ctl(shard, "federation")
        st = cd.try_ctl(_leader_control(c, c.hub_controls, "a hub leader"), "federation")
        if not (isinstance(st, dict) and isinstance(fwd, dict)) or fwd["batches_held"]:
            return None
        # Every closed bucket forwarded and received; tv-1's reports were in the first.
        cnt = st["counters"]
        done = cnt["reports"] >= fwd["reports_forwarded"] and cnt["opened"] >= tv_real
        return (st, fwd) if done else None

    t = time.monotonic()
    st, fwd = wait_for(at_hub, 60, "every closed bucket at the hub", alive=c.check_alive)
    cnt = st["counters"]
    waiting = int(fwd["reports_held"] or 0) - int(fwd["reports_in_held_batches"] or 0)
    say(f"path: shard leader forwarded {fwd['batches_forwarded']} buckets of >= "
        f"{c.s.k_anonymity} TVs ({fwd['reports_forwarded']} sealed reports); the aggregator "
        f"mixed them; in {time.monotonic() - t:.1f} s the hub received {cnt['reports']} and "
        f"opened {cnt['opened']} real ones (pushed: {pushed} by the fleet, {tv_real} by tv-1's "
        f"agent; {cnt['dummies']} dummies); {waiting} wait in the shard's open bucket for "
        f"more TVs")
    release = _hub_release(c)
    fleet = (f"noise calibrated for a fleet of {c.s.simulated_fleet:,} TVs"
             if c.s.simulated_fleet > c.s.simulated_devices else "noise at the real population")
    say(f"hub: release v{release['version']}: {release['pairs_published']} pairs, "
        f"{release['titles_published']} titles published; {release['body_bytes']} bytes "
        f"stored; ε {release['epsilon']} this release (σ {release['sigma']:.3g}, {fleet}), "
        f"ε total {_num(release['epsilon_total'])}")

    def released() -> bool:
        st = cd.try_ctl(shard, "federation")
        return isinstance(st, dict) and (st.get("release_complete") or 0) >= release["version"]

    wait_for(released, 30, "the release at the shard", alive=c.check_alive)
    # The shard's version (its pull cursor, which TVs merge up to) now covers the release.
    shard_version = _shard_version(c)
    t = time.monotonic()

    def pulled() -> dict[str, Any] | None:
        st = _tv_sync(tv_control)
        return st if int(st["global_version"]) >= shard_version else None

    tv = wait_for(pulled, 60, "tv-1's agent to pull the release", alive=c.check_alive)
    say(f"tv-1: its sync agent pulled the release within {time.monotonic() - t:.1f} s "
        f"(shard version {tv['global_version']})")
    after = _tv_recommend(tv_control, now, "after the release")
    if after == before:
        raise ClusterError("the release did not change tv-1's recommendations")


def _rotation(c: Cluster) -> None:
    """``ctl federation rotate-key``: the hub signs its new key; tv-1 learns it through
    its shard and adopts it only because the signature verifies with the verify key it
    was provisioned with."""
    tv_control = f"ipc://{c.tv_dir / 'control.sock'}"
    t = time.monotonic()
    key, _ = wait_for(lambda: _hub_keys(c), 60, "the hub's key", alive=c.check_alive)
    # The next key by id: asked again on a new leader, it is not rotated twice.
    out = _on_leader(c, c.hub_controls, "federation", f"rotate-key={key.key_id + 1}")
    new_id = int(out["key_id"])

    def adopted() -> dict[str, Any] | None:
        st = _tv_sync(tv_control)
        return st if int(st["hub_key_id"]) == new_id else None

    tv = wait_for(adopted, 60, f"tv-1 to adopt the hub's key {new_id}", alive=c.check_alive)
    if int(tv.get("hub_key_refused", 0)):
        raise ClusterError(f"tv-1 refused a hub key announcement: {tv.get('hub_key_refusal')}")
    say(f"hub: rotate-key → key {new_id}, signed by the hub (verify key "
        f"{str(out['verify_key'])[:16]}…); tv-1 checked the signature and seals to key "
        f"{new_id} within {time.monotonic() - t:.1f} s (announcements refused: 0)")


def _check_replicas(c: Cluster) -> None:
    controls = c.shard_controls

    def converged() -> list[Any] | None:
        st = [_raft_status(ctl) for ctl in controls]
        if not all(st):
            return None
        applied = {s["applied_index"] for s in st}
        return st if len(applied) == 1 else None

    st = wait_for(converged, 30, "replicas to apply the same index", alive=c.check_alive)
    say(
        f"  every replica applied index {st[0]['applied_index']}; roles: "
        + ", ".join(f"{s['self']}={s['role']}" for s in st)
    )


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - via omega-node
    p = argparse.ArgumentParser()
    p.add_argument("--config", type=Path)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--base-port", type=int)
    return run_local_cluster(p.parse_args(argv))
