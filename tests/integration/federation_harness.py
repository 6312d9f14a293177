"""A whole constellation of real processes on 127.0.0.1: a 3-replica hub, an
aggregator and two 3-replica shards, plus simulated TVs that push sealed co-view
reports (``DeviceClient`` + ``omega.federation.report.seal``) and pull releases.

Every node is the real ``omega-node`` with its own generated TOML; operators' work
goes through each node's control socket (``ctl federation ...``). Intervals are
short (forward and mix every 0.3 s, catch-up every 0.5 s); hub releases only on
demand, so a test decides when privacy budget is spent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shard_harness import DEDUP_SECRET, FLEET_KEY, REPO, ShardCluster, _toml, wait_for

from omega.client import ClientSettings, DeviceClient
from omega.errors import OmegaError, ProtocolError
from omega.federation.report import HubKey, coview, seal
from omega.protocol import (
    CtlReply,
    CtlRequest,
    ErrorReply,
    Message,
    PullResp,
    decode,
    derive_device_key,
    encode,
)
from omega.transport import RpcClient, TransportSettings
from tests.nodeproc import free_ports
from tests.tcptap import TcpTap

RAFT_PASSWORD = "federation-test-raft-password-0123"


REGION = "eu"


class NodeProc:
    """One aggregator or hub process: its TOML, its control socket."""

    def __init__(self, name: str, role: str, root: Path, body: str) -> None:
        self.name = name
        self.role = role
        self.data_dir = root / name
        self.cfg_path = root / f"{name}.toml"
        self.log_path = root / f"{name}.log"
        self.control = f"ipc://{root / f'{name}.ctl'}"
        self.cfg_path.write_text(
            f'role = "{role}"\n[node]\nname = "{name}"\ndata_dir = {_toml(str(self.data_dir))}\n'
            f'control = {_toml(self.control)}\nlog_level = "info"\n{body}')
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl = RpcClient(self.control, TransportSettings(request_timeout_s=5.0, retries=0),
                              name=f"ctl-{name}")

    def spawn(self) -> None:
        env = dict(os.environ)
        env["OMEGA_RAFT_PASSWORD"] = RAFT_PASSWORD
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "omega.cli", "--role", self.role, "--config",
                 str(self.cfg_path)], cwd=REPO, env=env, stdout=log, stderr=log)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap: its files as a crash leaves them."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def ask(self, command: str, target: str = "", timeout: float = 10.0) -> Message | None:
        """The node's reply (``CtlReply`` or ``ErrorReply``), or None when it does not
        answer now."""
        if not self.alive:
            return None
        try:
            return decode(self._ctl.request(encode(CtlRequest(command, target)),
                                            timeout_s=timeout))
        except OmegaError:
            return None

    def ctl(self, command: str, target: str = "", timeout: float = 10.0) -> Any:
        """The node's answer (payload), or None when it does not answer now."""
        reply = self.ask(command, target, timeout)
        return reply.payload if isinstance(reply, CtlReply) else None

    def close(self) -> None:
        self.terminate()
        self._ctl.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _fed_status(node: Any) -> dict[str, Any] | None:
    out = node.ctl("federation") if isinstance(node, NodeProc) else None
    return out if isinstance(out, dict) else None


class Constellation:
    """Hub ×3, aggregator, shards A and B ×3 (each its own Raft group)."""

    def __init__(self, root: Path, *, k: int = 5) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        # Every port that carries federation or device traffic is reached through a
        # recording relay (tests/tcptap.py): what each node receives is captured. The
        # relays bind first, so no node's port is one a relay took.
        self.agg_tap = TcpTap(name="agg")
        self.hub_taps = [TcpTap(name=f"hub{i}") for i in range(3)]
        self.pub_taps = [TcpTap(name=f"hub{i}-pub") for i in range(3)]
        self.device_taps = {g: [TcpTap(name=f"shard-{g}{i}") for i in range(3)]
                            for g in ("a", "b")}
        ports = free_ports(10)
        hub_listen = [f"tcp://127.0.0.1:{p}" for p in ports[0:3]]
        hub_raft = [f"127.0.0.1:{p}" for p in ports[3:6]]
        hub_pub = [f"tcp://127.0.0.1:{p}" for p in ports[6:9]]
        self.aggregator_listen = f"tcp://127.0.0.1:{ports[9]}"
        self.hub_listen = hub_listen
        self.agg_tap.relay_to(self.aggregator_listen)
        for tap, listen in zip(self.hub_taps, hub_listen, strict=True):
            tap.relay_to(listen)
        for tap, pub in zip(self.pub_taps, hub_pub, strict=True):
            tap.relay_to(pub)
        hub_via = [p.address for p in self.hub_taps]
        peers = [f"{r}={ls}" for r, ls in zip(hub_raft, hub_via, strict=True)]
        self.hubs = [
            NodeProc(f"hub{i}", "hub", root, "\n".join([
                f"listen = {_toml(hub_listen[i])}",
                "[hub]", f"publish = {_toml(hub_pub[i])}", f"peer_addresses = {_toml(peers)}",
                "release_interval_s = 86400.0",
                "[hub.release]", "noise = false", "min_contributors = 1",
                "threshold_sigmas = 0.0",
                "[hub.raft]", f"self_address = {_toml(hub_raft[i])}",
                f"partners = {_toml([r for r in hub_raft if r != hub_raft[i]])}",
            ]) + "\n")
            for i in range(3)
        ]
        self.aggregator = NodeProc("agg", "aggregator", root, "\n".join([
            f"listen = {_toml(self.aggregator_listen)}",
            "[aggregator]", f'region = "{REGION}"', f"hub = {_toml(hub_via)}",
            "interval_s = 0.3", "min_batches = 1", "max_wait_s = 0.0",
        ]) + "\n")
        fed = "\n".join([
            "[shard.federation]", f"aggregator = {_toml([self.agg_tap.address])}",
            f"hub = {_toml(hub_via)}",
            f"hub_publish = {_toml([p.address for p in self.pub_taps])}",
            "forward_interval_s = 0.3", "catch_up_interval_s = 0.5",
        ])
        for name in ("a", "b"):
            (root / f"shard-{name}").mkdir(exist_ok=True)
        self.shards = {name: ShardCluster(root / f"shard-{name}", shard={"k_anonymity": k},
                                          workers=8, launcher="omega-node", extra=fed,
                                          advertise=self._device_tap(name))
                       for name in ("a", "b")}

    def _device_tap(self, group: str) -> Callable[[str], str]:
        """Each shard replica advertises a relay in front of its device port: TVs dial
        the relays, and a follower's ``not_leader`` sends them to the leader's relay."""
        free = iter(self.device_taps[group])

        def advertise(listen: str) -> str:
            return next(free).relay_to(listen).address
        return advertise

    def taps(self) -> list[TcpTap]:
        return [*(t for ts in self.device_taps.values() for t in ts), self.agg_tap,
                *self.hub_taps, *self.pub_taps]

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        for h in self.hubs:
            h.spawn()
        self.aggregator.spawn()
        for c in self.shards.values():
            for n in c.nodes:
                n.spawn()
        self.wait_hub(timeout)
        for c in self.shards.values():
            c.wait_leader(timeout)
        # A node that could not start (a port taken meanwhile) fails here, not later as
        # a group that lost its majority at the first kill.
        dead = [n for n in self.all_nodes() if not n.alive]
        assert not dead, "\n".join(f"--- {n.name} ---\n{n.log_tail()}" for n in dead)

    def hub_leader(self) -> NodeProc | None:
        """The one hub replica that says it leads (None while none or two do: a deposed
        leader may not know it yet)."""
        leads = [h for h in self.hubs if (st := _fed_status(h)) and st.get("leader")]
        return leads[0] if len(leads) == 1 else None

    def wait_hub(self, timeout: float = 60.0) -> NodeProc:
        """A hub leader with a key and a first release announcing it."""
        def ready() -> NodeProc | None:
            lead = self.hub_leader()
            st = _fed_status(lead) if lead else None
            return lead if st and st.get("current_key") and st.get("last_release") else None
        return wait_for(ready, timeout, "a hub leader with a key and a release")

    def all_nodes(self) -> list[Any]:
        return [*self.hubs, self.aggregator, *(n for c in self.shards.values() for n in c.nodes)]

    def close(self) -> None:
        for c in self.shards.values():
            c.close()
        self.aggregator.close()
        for h in self.hubs:
            h.close()
        for t in self.taps():
            t.close()

    def logs(self) -> str:
        out = [f"--- {h.name} ---\n{h.log_tail()}" for h in [*self.hubs, self.aggregator]]
        out += [c.logs() for c in self.shards.values()]
        return "\n".join(out)

    # -- operations --------------------------------------------------------------

    def shard_trigger(self, name: str) -> dict[str, Any]:
        lead = self.shards[name].wait_leader()
        return ctl_target(lead.control, "federation", "trigger")

    def hub_ctl(self, command: str, target: str = "", *, timeout: float = 120.0,
                idempotent: bool = False) -> dict[str, Any]:
        """``command`` on the hub leader. Leadership can move between finding the leader
        and asking it (it flaps on a loaded machine): a ``not_leader`` refusal did
        nothing, so the new leader is asked, until ``timeout``. With ``idempotent``
        any failure is retried (asking twice does what asking once does)."""
        def attempt() -> dict[str, Any] | None:
            lead = self.wait_hub(timeout)
            reply = lead.ask(command, target, timeout=min(60.0, timeout))
            if isinstance(reply, CtlReply) and isinstance(reply.payload, dict):
                return dict(reply.payload)
            if idempotent or (isinstance(reply, ErrorReply) and reply.code == "not_leader"):
                return None
            raise AssertionError(f"{lead.name}: ctl {command} {target}: {reply}\n"
                                 f"{lead.log_tail()}")
        return wait_for(attempt, timeout, f"the hub leader to do {command} {target}",
                        interval=0.1)

    def hub_release(self) -> dict[str, Any]:
        """A release now, named by its version: asked again after a lost answer (the
        leader moved while it committed), it is answered as made, not made twice."""
        before = int(self.hub_status()["counters"]["version"])
        return self.hub_ctl("federation", f"trigger={before + 1}", idempotent=True)

    def hub_status(self) -> dict[str, Any]:
        lead = self.wait_hub()
        st = _fed_status(lead)
        assert st is not None
        return st

    def flush(self, expect_reports: int, timeout: float = 60.0) -> dict[str, Any]:
        """Forward until the hub holds ``expect_reports`` reports (then the shards and
        the aggregator hold none)."""
        def arrived() -> dict[str, Any] | None:
            # Nudges only (every stage forwards on its interval too): a shard leader
            # that just lost its leadership, or is restarting, is asked again next time.
            for name in self.shards:
                with contextlib.suppress(AssertionError, OmegaError):
                    ctl_target(self.shards[name].wait_leader().control, "federation",
                               "trigger")
            self.aggregator.ctl("federation", "trigger")
            lead = self.hub_leader()
            st = _fed_status(lead) if lead else None
            got = st["counters"]["reports"] if st else -1
            return st if got >= expect_reports else None
        return wait_for(arrived, timeout, f"{expect_reports} reports at the hub", interval=0.2)


def ctl_target(control: str, command: str, target: str, timeout: float = 10.0) -> dict[str, Any]:
    with RpcClient(control, TransportSettings(request_timeout_s=timeout, retries=0)) as c:
        reply = decode(c.request(encode(CtlRequest(command, target)), timeout_s=timeout))
    assert isinstance(reply, CtlReply) and isinstance(reply.payload, dict), reply
    return dict(reply.payload)


# -- simulated TVs ---------------------------------------------------------------------


def tv(endpoints: Sequence[str], name: str) -> DeviceClient:
    return DeviceClient(endpoints, name, derive_device_key(FLEET_KEY, name),
                        ClientSettings(request_timeout_s=2.0, call_timeout_s=60.0, attempts=30,
                                       backoff_s=0.05, backoff_max_s=0.5,
                                       wait_rate_limit_max_s=5.0))


def hub_key(endpoints: Sequence[str], name: str = "tv-keyprobe") -> HubKey:
    """The hub's current key as a TV learns it: from a pull."""
    with tv(endpoints, name) as dev:
        def key() -> PullResp | None:
            r = dev.pull(0, REGION)
            return r if r.hub_key_id else None
        r = wait_for(key, 30, "the hub's key at the shard", interval=0.1)
    return HubKey(r.hub_key_id, r.hub_public_key)


@dataclass
class Pushed:
    """Every report a TV had acknowledged, by device."""

    acked: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    failed: int = 0

    @property
    def reports(self) -> int:
        return sum(len(v) for v in self.acked.values())


def in_threads(run: Any, names: Sequence[str], threads: int, timeout: float) -> None:
    """``run`` over ``threads`` interleaved slices of ``names`` at once, each joined
    within ``timeout``."""
    ths = [threading.Thread(target=run, args=(names[i::threads],), daemon=True)
           for i in range(threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout)


def push_coviews(endpoints: Sequence[str], key: HubKey, plan: dict[str, list[tuple[str, str]]],
                 threads: int = 8, out: Pushed | None = None) -> Pushed:
    """Each device pushes its pairs (sealed, one push) until acknowledged."""
    out = out or Pushed()
    lock = threading.Lock()
    names = sorted(plan)

    def run(mine: Iterable[str]) -> None:
        for name in mine:
            blobs = [seal(coview(a, b, 1.0), key) for a, b in plan[name]]
            with tv(endpoints, name) as dev:
                for _ in range(20):
                    try:
                        dev.push(blobs)
                    except ProtocolError:
                        with lock:
                            out.failed += 1
                        continue
                    with lock:
                        out.acked[name] = list(plan[name])
                    break

    in_threads(run, names, threads, 180)
    return out


def pull_all(dev: DeviceClient, since: int = 0, max_pulls: int = 200) -> tuple[int, PullResp]:
    """Pull until the TV is at the shard's version; the merged delta as one PullResp."""
    nb: dict[str, Any] = {}
    pop: dict[str, float] = {}
    content: dict[str, Any] = {}
    trends: tuple[Any, ...] = ()
    key = (0, b"")
    version = since
    current = dev.heartbeat().global_version
    for _ in range(max_pulls):
        r = dev.pull(version, REGION)
        nb.update(dict(r.neighbours))
        pop.update(dict(r.popularity))
        content.update({c.id: c for c in r.new_content})
        trends = r.trends or trends
        key = (r.hub_key_id, r.hub_public_key)
        version = r.global_version
        if version >= current:
            break
    return version, PullResp(version, tuple(nb.items()), tuple(pop.items()), trends,
                             tuple(content.values())[:64], key[0], key[1])


def scan_files(root: Path) -> bytes:
    """Every byte a node keeps on disk (LMDB files, Raft journal, logs), but the
    embedder's model file a hub copies into ``models/`` (22 MB, the same on every hub,
    shipped with the package: searching it for hundreds of needles took seconds)."""
    chunks = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".sock") and p.parent.name != "models":
            chunks.append(p.read_bytes())
    return b"".join(chunks)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)


__all__ = ["DEDUP_SECRET", "Constellation", "NodeProc", "Pushed", "ctl_target", "dump",
           "hub_key", "pull_all", "push_coviews", "scan_files", "tv"]


# -- TVs running the real sync agent code -----------------------------------------------


@dataclass
class AgentTv:
    """One TV in this process: a brain and the sync agent's cycle (``SyncCore`` over
    ``DeviceLink``, the code ``omega.actors.sync.SyncAgent`` runs), provisioned like a
    factory TV (``omega.sync.provision``: device key from the fleet key, shard group,
    hub key)."""

    name: str
    brain: Any
    core: Any

    @classmethod
    def open(cls, root: Path, name: str, endpoints: Sequence[str], group: str, key: HubKey,
             catalog: Sequence[tuple[str, str]], *, embedder: Any = None, seed: int = 0,
             verify_key: bytes | None = None) -> AgentTv:
        import random

        from omega.brain.api import Brain, Content
        from omega.brain.settings import BrainSettings
        from omega.sync.core import SyncCore
        from omega.sync.link import DeviceLink, device_key_from_secret
        from omega.sync.provision import provision
        from omega.sync.settings import ShardGroup

        grp = ShardGroup(group, REGION, tuple(endpoints))
        # verify_key: the hub's (``Constellation.hub_status()["verify_key"]``); without
        # one the TV keeps ``key`` and refuses every rotation.
        prov = provision(root / name, device_id=name, region=REGION, groups=[grp], hub=key,
                         hub_verify_key=verify_key, fleet_key=FLEET_KEY)
        device_key = device_key_from_secret(prov.key_file.read_bytes(), str(prov.key_file))
        opts: dict[str, Any] = {"embedder": embedder} if embedder is not None else {}
        brain = Brain.open(root / name / "data", BrainSettings(durability="nosync"), **opts)
        if not brain.content_ids():
            brain.add_content([Content(cid, title) for cid, title in catalog])

        def connect(g: ShardGroup) -> DeviceLink:
            return DeviceLink(g, name, device_key, ClientSettings(
                request_timeout_s=2.0, call_timeout_s=60.0, attempts=30, backoff_s=0.05,
                backoff_max_s=0.5, wait_rate_limit_max_s=5.0))

        # Every sync pulls: the round's release must reach the TVs within the test.
        settings = dataclasses.replace(prov.settings, crowd_refresh_s=0.0)
        core = SyncCore(brain, settings, connect, rng=random.Random(seed))
        return cls(name, brain, core)

    def watch(self, ids: Sequence[str], start: float) -> None:
        from omega.brain.api import ViewingEvent

        for j, cid in enumerate(ids):
            self.brain.observe(ViewingEvent(cid, 1.0, start + 60.0 * j))

    def close(self) -> None:
        self.core.close()
        self.brain.close()


def sync_tvs(root: Path, endpoints: Sequence[str], group: str, key: HubKey,
             catalog: Sequence[tuple[str, str]], plan: dict[str, list[str]], start: float,
             threads: int = 8, verify_key: bytes | None = None) -> dict[str, Any]:
    """Each TV (small brain: the hash embedder) watches its titles, then runs one sync
    of the agent's cycle (build → push → pull); the outcome of each, by name."""
    from omega.brain.embedder import HashEmbedder

    out: dict[str, Any] = {}
    lock = threading.Lock()
    names = sorted(plan)

    def run(mine: Iterable[str]) -> None:
        for name in mine:
            t = AgentTv.open(root, name, endpoints, group, key, catalog,
                             embedder=HashEmbedder(), seed=zlib.crc32(name.encode()),
                             verify_key=verify_key)
            try:
                t.watch(plan[name], start)
                outcome = t.core.sync()
                with lock:
                    out[name] = outcome
            finally:
                t.close()

    in_threads(run, names, threads, 300)
    return out
