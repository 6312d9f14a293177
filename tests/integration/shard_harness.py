"""Drive a 3-replica shard group of real processes on 127.0.0.1 (tests and bench/shard.py).

Each replica is the real ``omega-node --role shard`` (the default) or, with
``launcher="runner"``, ``tests/integration/shard_node.py`` (store + service +
transport composed directly, no actors, plus a ``ctl shard`` command with the
service's stats); both read the same generated TOML. The environment variable
``OMEGA_SHARD_LAUNCHER`` overrides the default. Waits poll a condition against a deadline.
``Load`` pushes from many simulated devices through ``DeviceClient`` and records
every acknowledged push, so a test can check afterwards — offline, on each
replica's LMDB file — that each acknowledged push is stored exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from omega.client import ClientSettings, DeviceClient
from omega.errors import OmegaError, ProtocolError
from omega.protocol import CtlReply, CtlRequest, decode, derive_device_key, encode
from omega.raft.kv import LmdbStore
from omega.shard import state
from omega.sync.provision import toml_value
from omega.transport import RpcClient, TransportSettings

# Also imported by bench/shard.py, outside pytest: the repo root holds tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.nodeproc import free_ports, wait_for

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("shard_node.py")
FLEET_KEY = b"shard-test-fleet-key-0123456789ab"
DEDUP_SECRET = b"shard-test-dedup-secret-0123456789"
Launcher = Literal["runner", "omega-node"]
T = TypeVar("T")


_toml = toml_value


class ShardProc:
    """One replica process and its control socket."""

    def __init__(self, name: str, root: Path, listen: str, raft: str, partners: list[str],
                 shard: dict[str, Any], raft_opts: dict[str, Any], workers: int,
                 launcher: Launcher, extra: str = "", *, password: bytes | None = None,
                 umask: int | None = None, transport: dict[str, Any] | None = None,
                 advertise: str = "") -> None:
        self.name = name
        self.password = password
        self.umask = umask
        self.listen = listen
        #: The device-facing address TVs are sent to (e.g. a recording relay in front).
        self.advertise = advertise or listen
        self.raft = raft
        self.data_dir = root / name
        self.cfg_path = root / f"{name}.toml"
        self.log_path = root / f"{name}.log"
        self.control = f"ipc://{root / f'{name}.ctl'}"
        self.launcher = launcher
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        lines = [
            'role = "shard"', "[node]", f"name = {_toml(name)}",
            f"data_dir = {_toml(str(self.data_dir))}", f"listen = {_toml(listen)}",
            f"control = {_toml(self.control)}", 'log_level = "warning"',
            "[transport]", f"workers = {workers}", "request_timeout_s = 2.0",
            *(f"{k} = {_toml(v)}" for k, v in (transport or {}).items()),
            "[shard]", f"advertise = {_toml(self.advertise)}",
            *(f"{k} = {_toml(v)}" for k, v in shard.items()),
            "[shard.raft]", f"self_address = {_toml(raft)}", f"partners = {_toml(partners)}",
            "dev_mode = true",
            *(f"{k} = {_toml(v)}" for k, v in raft_opts.items()),
            extra,  # more tables, e.g. [shard.federation]
        ]
        self.cfg_path.write_text("\n".join(lines) + "\n")
        self._ctl = RpcClient(self.control, TransportSettings(request_timeout_s=1.0, retries=0),
                              name=f"ctl-{name}")

    # -- process -----------------------------------------------------------------

    def spawn(self) -> None:
        env = dict(os.environ)
        env["OMEGA_FLEET_KEY"] = FLEET_KEY.decode()
        env["OMEGA_DEDUP_SECRET"] = DEDUP_SECRET.decode()
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        if self.password is not None:
            env["OMEGA_RAFT_PASSWORD"] = self.password.decode()
        if self.launcher == "runner":
            cmd = [sys.executable, str(RUNNER), "--config", str(self.cfg_path)]
        else:
            cmd = [sys.executable, "-m", "omega.cli", "--role", "shard",
                   "--config", str(self.cfg_path)]
        umask = self.umask

        def preexec() -> None:  # the umask the node inherits (tests of file modes)
            if umask is not None:
                os.umask(umask)

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log,
                                         preexec_fn=preexec if umask is not None else None)
        self.paused = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL and reap: LMDB and the Raft journal as a crash leaves them."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.paused = False

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        self.terminate()
        self._ctl.close()

    # -- control socket ----------------------------------------------------------

    def ctl(self, command: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The node's answer to ``command``, or None if it does not answer now."""
        if not self.alive or self.paused:
            return None
        try:
            reply = decode(self._ctl.request(encode(CtlRequest(command)), timeout_s=timeout))
        except OmegaError:
            return None
        if not isinstance(reply, CtlReply) or not isinstance(reply.payload, dict):
            return None
        return dict(reply.payload)

    def status(self) -> dict[str, Any] | None:
        return self.ctl("raft")

    # -- offline -----------------------------------------------------------------

    def offline(self) -> OfflineState:
        """Open the stopped replica's LMDB file and read what it holds."""
        assert not self.alive, f"{self.name} must be stopped first"
        store = LmdbStore(self.data_dir / "raft" / "state.mdb", state.DATABASES,
                          map_size=1 << 30, fsync=False)
        try:
            index, digest = store.state_hash()
            with store.reader() as kv:
                reports = Counter(state.all_reports(kv))
                counters = state.counters(kv)
        finally:
            store.close()
        return OfflineState(index, digest, reports, counters)

    def memory(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak) of the process, in bytes, from /proc."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class OfflineState:
    applied_index: int
    state_hash: str
    reports: Counter[bytes]
    counters: dict[str, int]


class ShardCluster:
    """Three replicas on free 127.0.0.1 ports, each in its own process."""

    def __init__(self, root: Path, n: int = 3, *, shard: dict[str, Any] | None = None,
                 raft: dict[str, Any] | None = None, workers: int = 64,
                 launcher: Launcher | None = None, extra: str = "",
                 password: bytes | None = None, umask: int | None = None,
                 transport: dict[str, Any] | None = None,
                 advertise: Callable[[str], str] | None = None) -> None:
        """``advertise``: the device-facing address for a replica's listen address
        (default: the listen address itself)."""
        if launcher is None:
            env = os.environ.get("OMEGA_SHARD_LAUNCHER", "omega-node")
            launcher = "runner" if env == "runner" else "omega-node"
        ports = free_ports(2 * n)
        rafts = [f"127.0.0.1:{p}" for p in ports[n:]]
        shard_opts = {"rate_limit_interval_s": 0.0, "k_anonymity": 10, **(shard or {})}
        self.nodes = [
            ShardProc(f"s{i}", root, f"tcp://127.0.0.1:{ports[i]}", rafts[i],
                      [r for r in rafts if r != rafts[i]], shard_opts, raft or {}, workers,
                      launcher, extra, password=password, umask=umask, transport=transport,
                      advertise=advertise(f"tcp://127.0.0.1:{ports[i]}") if advertise else "")
            for i in range(n)
        ]

    @property
    def endpoints(self) -> list[str]:
        """Where TVs dial: each replica's advertised device address."""
        return [n.advertise for n in self.nodes]

    def start(self, timeout: float = 60.0) -> ShardProc:
        for node in self.nodes:
            node.spawn()
        return self.wait_leader(timeout)

    def live(self) -> list[ShardProc]:
        return [n for n in self.nodes if n.alive and not n.paused]

    def leader(self, among: list[ShardProc] | None = None) -> ShardProc | None:
        """The node that says it leads, if every other answering node agrees."""
        statuses = {n.name: n.status() for n in (among or self.live())}
        leaders = [n for n in (among or self.live())
                   if (statuses.get(n.name) or {}).get("role") == "leader"]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        for n in among or self.live():
            st = statuses.get(n.name)
            if n is not lead and st is not None and st.get("leader") != lead.raft:
                return None
        return lead

    def wait_leader(self, timeout: float = 30.0, among: list[ShardProc] | None = None
                    ) -> ShardProc:
        return wait_for(lambda: self.leader(among), timeout, "one agreed leader")

    def wait_converged(self, timeout: float = 60.0) -> int:
        """All live replicas applied the same index, equal to the leader's commit index."""
        def same() -> int | None:
            sts = [n.status() for n in self.live()]
            if not sts or any(s is None for s in sts):
                return None
            idx = {s["applied_index"] for s in sts if s is not None}
            commits = {s["commit_index"] for s in sts if s is not None and s["role"] == "leader"}
            if len(idx) == 1 and commits == idx:
                return idx.pop() or -1
            return None
        return wait_for(same, timeout, "replicas converged")

    def stop(self) -> None:
        """Stop the followers, then the leader. Stopping the leader first lets the
        others elect a new one, whose first entries (Raft's no-op, its address) they
        commit before they stop too: converged replicas would stop at different
        indexes. A leader without followers commits nothing."""
        lead = self.leader()
        followers = [n for n in self.nodes if n is not lead]
        for n in followers:  # at once: the leader never has one follower left to commit with
            if n.proc is not None and n.proc.poll() is None:
                if n.paused:
                    n.resume()
                n.proc.send_signal(signal.SIGTERM)
        for n in followers:
            n.terminate()  # waits (SIGTERM again is harmless: it only sets the stop event)
        if lead is not None:
            lead.terminate()

    def close(self) -> None:
        for n in self.nodes:
            n.close()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.log_tail()}" for n in self.nodes)


# -- load -------------------------------------------------------------------------


def device_name(prefix: str, i: int) -> str:
    return f"{prefix}{i:05d}"


@dataclass
class _Device:
    client: DeviceClient
    pad: int = 0
    n: int = 0

    def marker(self) -> bytes:
        m = f"{self.client.device_id}/{self.n}".encode()
        return m + b"\x00" * max(0, self.pad - len(m))


@dataclass
class LoadResult:
    acked: dict[bytes, int] = field(default_factory=dict)  # marker -> seq
    failed: int = 0
    #: (monotonic time the ack arrived, seconds it took), per acknowledged push.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class Load:
    """``devices`` simulated TVs pushing one report each per push, from ``threads``.

    Each device pushes until acked (a failed push is retried later with the same
    report, hence the same sequence number); ``max_pushes`` bounds the total;
    ``stop()`` ends it. Thread-safe result in ``result``.
    """

    def __init__(self, endpoints: list[str], devices: int, threads: int = 16, *,
                 prefix: str = "tv", max_pushes: int | None = None,
                 pushes_per_device: int | None = None,
                 client: ClientSettings | None = None,
                 request_timeout_s: float = 1.5, report_bytes: int = 0) -> None:
        self._rpc = RpcClient(endpoints, TransportSettings(
            request_timeout_s=request_timeout_s, retries=0, send_timeout_s=0.5,
            reconnect_min_ms=20, reconnect_max_ms=200), name="load")
        settings = client or ClientSettings(request_timeout_s=request_timeout_s, attempts=10,
                                            call_timeout_s=8.0, backoff_s=0.02,
                                            backoff_max_s=0.3)
        self._devices = [
            _Device(DeviceClient(endpoints, name, derive_device_key(FLEET_KEY, name), settings,
                                 requester=self._rpc), report_bytes)
            for name in (device_name(prefix, i) for i in range(devices))
        ]
        self._threads_n = threads
        self._max = max_pushes
        self._per_device = pushes_per_device
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = 0
        self.result = LoadResult()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        for t in range(self._threads_n):
            mine = self._devices[t::self._threads_n]
            th = threading.Thread(target=self._run, args=(mine,), daemon=True,
                                  name=f"load-{t}")
            self._threads.append(th)
            th.start()
        return self

    @property
    def acked(self) -> int:
        with self._lock:
            return len(self.result.acked)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _take(self) -> bool:
        with self._lock:
            if self._max is not None and self._started >= self._max:
                return False
            self._started += 1
            return True

    def _run(self, devices: list[_Device]) -> None:
        while not self._stop.is_set():
            active = [d for d in devices
                      if self._per_device is None or d.n < self._per_device]
            if not active:
                return
            for d in active:
                if self._stop.is_set() or not self._take():
                    return
                marker = d.marker()
                t0 = time.monotonic()
                try:
                    ack = d.client.push([marker])
                except ProtocolError as exc:
                    with self._lock:
                        self.result.failed += 1
                        self.result.errors[exc.code] += 1
                        self._started -= 1  # the same push goes again later
                    continue
                t1 = time.monotonic()
                with self._lock:
                    self.result.acked[marker] = ack.seq
                    self.result.latencies.append((t1, t1 - t0))
                d.n += 1

    def stop(self, timeout: float = 30.0) -> LoadResult:
        self._stop.set()
        for d in self._devices:
            d.client._stopped.set()  # end backoff waits at once
        for th in self._threads:
            th.join(timeout)
        self._rpc.close()
        return self.result

    def wait_acked(self, n: int, timeout: float) -> int:
        return wait_for(lambda: self.acked >= n and self.acked, timeout, f"{n} acked pushes")


@contextlib.contextmanager
def cluster(root: Path, **kw: Any) -> Iterator[ShardCluster]:
    c = ShardCluster(root, **kw)
    try:
        yield c
    except BaseException:
        print(c.logs(), file=sys.stderr)
        raise
    finally:
        c.close()


def verify_exactly_once(c: ShardCluster, acked: dict[bytes, int]) -> dict[str, Any]:
    """Stop every replica, read each LMDB file: same state, every ack stored exactly once."""
    c.stop()
    states = {n.name: n.offline() for n in c.nodes}
    hashes = {s.state_hash for s in states.values()}
    assert len(hashes) == 1, {k: (s.applied_index, s.state_hash) for k, s in states.items()}
    for name, s in states.items():
        twice = [m for m, k in s.reports.items() if k > 1]
        assert not twice, f"{name}: stored more than once: {twice[:5]}"
        missing = [m for m in acked if s.reports[m] != 1]
        assert not missing, f"{name}: acknowledged but not stored: {missing[:5]}"
    any_state = next(iter(states.values()))
    return {"applied_index": any_state.applied_index, "stored": sum(any_state.reports.values()),
            "acked": len(acked), "counters": any_state.counters}
