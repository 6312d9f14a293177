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
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shard_harness import DEDUP_SECRET, FLEET_KEY, REPO, ShardCluster, _toml, wait_for

from omega.client import ClientSettings, DeviceClient
from omega.errors import OmegaError, ProtocolError
from omega.federation.report import HubKey, coview, seal
from omega.protocol import CtlReply, CtlRequest, PullResp, decode, derive_device_key, encode
from omega.transport import RpcClient, TransportSettings
from tests.nodeproc import free_ports

RAFT_PASSWORD = "federation-test-raft-password-0123"


class CaptureProxy:
    """A TCP relay in front of a node that records every byte the node receives:
    the byte capture of what a shard sends the aggregator, or the aggregator the hub."""

    def __init__(self, target: str) -> None:
        import socket

        host, _, port = target.removeprefix("tcp://").rpartition(":")
        self._target = (host, int(port))
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._srv.getsockname()[1]}"
        self.received = bytearray()
        self._lock = threading.Lock()
        self._socks: list[Any] = [self._srv]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="capture").start()

    def _accept(self) -> None:
        import socket

        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: Any, dst: Any, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.received += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def captured(self) -> bytes:
        with self._lock:
            return bytes(self.received)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
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

    def ctl(self, command: str, target: str = "", timeout: float = 10.0) -> Any:
        """The node's answer (payload), or None when it does not answer now."""
        if not self.alive:
            return None
        try:
            reply = decode(self._ctl.request(encode(CtlRequest(command, target)),
                                             timeout_s=timeout))
        except OmegaError:
            return None
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
        ports = free_ports(10)
        hub_listen = [f"tcp://127.0.0.1:{p}" for p in ports[0:3]]
        hub_raft = [f"127.0.0.1:{p}" for p in ports[3:6]]
        hub_pub = [f"tcp://127.0.0.1:{p}" for p in ports[6:9]]
        self.aggregator_listen = f"tcp://127.0.0.1:{ports[9]}"
        self.hub_listen = hub_listen
        # What the aggregator and each hub replica receive goes through a recording relay.
        self.agg_capture = CaptureProxy(self.aggregator_listen)
        self.hub_captures = [CaptureProxy(a) for a in hub_listen]
        hub_via = [p.address for p in self.hub_captures]
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
            "[shard.federation]", f"aggregator = {_toml([self.agg_capture.address])}",
            f"hub = {_toml(hub_via)}", f"hub_publish = {_toml(hub_pub)}",
            "forward_interval_s = 0.3", "catch_up_interval_s = 0.5",
        ])
        for name in ("a", "b"):
            (root / f"shard-{name}").mkdir(exist_ok=True)
        self.shards = {name: ShardCluster(root / f"shard-{name}", shard={"k_anonymity": k},
                                          workers=8, launcher="omega-node", extra=fed)
                       for name in ("a", "b")}

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

    def hub_leader(self) -> NodeProc | None:
        for h in self.hubs:
            st = _fed_status(h)
            if st and st.get("leader"):
                return h
        return None

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
        for p in [self.agg_capture, *self.hub_captures]:
            p.close()

    def logs(self) -> str:
        out = [f"--- {h.name} ---\n{h.log_tail()}" for h in [*self.hubs, self.aggregator]]
        out += [c.logs() for c in self.shards.values()]
        return "\n".join(out)

    # -- operations --------------------------------------------------------------

    def shard_trigger(self, name: str) -> dict[str, Any]:
        lead = self.shards[name].wait_leader()
        return ctl_target(lead.control, "federation", "trigger")

    def hub_release(self) -> dict[str, Any]:
        lead = self.wait_hub()
        out = lead.ctl("federation", "trigger", timeout=30.0)
        assert isinstance(out, dict), lead.log_tail()
        return out

    def hub_status(self) -> dict[str, Any]:
        lead = self.wait_hub()
        st = _fed_status(lead)
        assert st is not None
        return st

    def flush(self, expect_reports: int, timeout: float = 60.0) -> dict[str, Any]:
        """Forward until the hub holds ``expect_reports`` reports (then the shards and
        the aggregator hold none)."""
        def arrived() -> dict[str, Any] | None:
            for name in self.shards:
                ctl_target(self.shards[name].wait_leader().control, "federation", "trigger")
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
    """Every byte a node keeps on disk (LMDB files, Raft journal, logs)."""
    chunks = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".sock"):
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

        core = SyncCore(brain, prov.settings, connect, rng=random.Random(seed))
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
             threads: int = 8) -> dict[str, Any]:
    """Each TV (small brain: the hash embedder) watches its titles, then runs one sync
    of the agent's cycle (build → push → pull); the outcome of each, by name."""
    from omega.brain.embedder import HashEmbedder

    out: dict[str, Any] = {}
    lock = threading.Lock()
    names = sorted(plan)

    def run(mine: Iterable[str]) -> None:
        for name in mine:
            t = AgentTv.open(root, name, endpoints, group, key, catalog,
                             embedder=HashEmbedder(), seed=zlib.crc32(name.encode()))
            try:
                t.watch(plan[name], start)
                outcome = t.core.sync()
                with lock:
                    out[name] = outcome
            finally:
                t.close()

    in_threads(run, names, threads, 300)
    return out
