"""Drive a group of ``raft_node_main.py`` processes on 127.0.0.1 (tests and bench).

Every wait is a poll of a condition against a deadline (``wait_for``); a request
to a node has its own deadline. Each node's stderr (its log) goes to a file in
the cluster's directory, printed by ``Cluster.logs()`` when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

# Also imported by raft_node_bench.py, outside pytest: the repo root holds tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from omega.waiting import WaitTimeout
from omega.waiting import wait_for as _wait_for
from tests.nodeproc import free_ports

NODE_SCRIPT = Path(__file__).with_name("raft_node_main.py")
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "integration-test-cluster-password"

T = TypeVar("T")


#: Polls may fail while a replica starts (no reply yet, connection refused): retried.
wait_for = partial(_wait_for, retry_on=(WaitTimeout, OSError))


class Node:
    """One replica process."""

    def __init__(self, name: str, address: str, partners: list[str], data_dir: Path,
                 log_path: Path, *, password: str | None, compact_entries: int) -> None:
        self.name = name
        self.address = address
        self.partners = partners
        self.data_dir = data_dir
        self.log_path = log_path
        self.password = password
        self.compact_entries = compact_entries
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self.stopped = False

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("OMEGA_TEST_RAFT_PASSWORD", None)
        args = [sys.executable, str(NODE_SCRIPT), "--self", self.address,
                "--partners", ",".join(self.partners), "--data", str(self.data_dir),
                "--compact-entries", str(self.compact_entries)]
        if self.password is None:
            args.append("--dev")
        else:
            env["OMEGA_TEST_RAFT_PASSWORD"] = self.password
        self._replies = queue.Queue()
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, text=True, env=env, bufsize=1)
        log.close()
        self._reader = threading.Thread(target=self._read, args=(self.proc, self._replies),
                                        daemon=True)
        self._reader.start()
        self.stopped = False

    def wait_ready(self, timeout: float = 30.0) -> None:
        first = self._next(timeout)
        assert first.get("ready"), f"{self.name} did not start: {first}"

    @staticmethod
    def _read(proc: subprocess.Popen[str], replies: queue.Queue[dict[str, Any] | None]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                replies.put(json.loads(line))
        replies.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise WaitTimeout(f"{self.name}: no reply within {timeout} s") from None
        if reply is None:
            raise WaitTimeout(f"{self.name}: process exited")
        return reply

    def request(self, op: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        assert not self.stopped, f"{self.name} is stopped (SIGSTOP)"
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise WaitTimeout(f"{self.name}: process gone") from exc
            return self._next(timeout)

    def status(self) -> dict[str, Any]:
        reply = self.request("status")
        assert reply["ok"], reply
        return reply["status"]  # type: ignore[no-any-return]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped = True
        elif sig == signal.SIGCONT:
            self.stopped = False

    def kill(self) -> None:
        """SIGKILL and reap (no clean shutdown: LMDB and the journal as a crash leaves them)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._release()
        self.stopped = False

    def _release(self) -> None:
        """Close our end of the pipes and wait for the reader to drain stdout."""
        assert self.proc is not None
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        if self._reader is not None:
            self._reader.join(timeout=10)

    def close(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        if self.stopped:
            self.signal(signal.SIGCONT)
        try:
            self.request("close", timeout=timeout)
            assert self.proc is not None
            self.proc.wait(timeout=timeout)
            self._release()
        except (WaitTimeout, subprocess.TimeoutExpired):
            self.kill()


class Cluster:
    """Three (or n) replicas on free 127.0.0.1 ports, each in its own process."""

    def __init__(self, root: Path, n: int = 3, *, password: str | None = PASSWORD,
                 compact_entries: int = 5000) -> None:
        ports = free_ports(n)
        addresses = [f"127.0.0.1:{p}" for p in ports]
        self.root = root
        self.nodes = [
            Node(f"n{i}", addr, [a for a in addresses if a != addr], root / f"n{i}",
                 root / f"n{i}.log", password=password, compact_entries=compact_entries)
            for i, addr in enumerate(addresses)
        ]

    def start(self, nodes: list[Node] | None = None) -> None:
        """Spawn the (given) nodes at once, then wait until each has opened its store."""
        for node in nodes or self.nodes:
            node.spawn()
        for node in nodes or self.nodes:
            node.wait_ready()

    def by_address(self, address: str) -> Node:
        return next(n for n in self.nodes if n.address == address)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and not n.stopped]

    def leader(self, timeout: float = 15.0, among: list[Node] | None = None) -> Node:
        """The node all live (or given) nodes name as leader, and which says it leads."""
        def agreed() -> Node | None:
            nodes = among if among is not None else self.live()
            statuses = [n.status() for n in nodes]
            leaders = {s["leader"] for s in statuses}
            if len(leaders) != 1 or None in leaders:
                return None
            leader = self.by_address(leaders.pop())
            if leader not in nodes:
                return None
            mine = next(s for n, s in zip(nodes, statuses, strict=True) if n is leader)
            return leader if mine["role"] == "leader" else None
        return wait_for(agreed, timeout, "an agreed leader")

    def converged(self, nodes: list[Node] | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the nodes applied the same index and hold the same state hash."""
        def same() -> dict[str, Any] | None:
            digests = [n.request("digest") for n in (nodes or self.live())]
            if len({(d["applied"], d["hash"]) for d in digests}) == 1:
                return digests[0]
            return None
        return wait_for(same, timeout, "equal state hashes", interval=0.05)

    def load_on_leader(self, prefix: str, n: int, *, size: int = 16, timeout: float = 30.0,
                       threads: int = 1, attempts: int = 5) -> list[dict[str, Any]]:
        """Commit ids prefix0..prefix(n-1), following leader changes; returns the errors met.

        After a failed submit (its outcome may be unknown) a barrier entry is
        committed on the new leader, so every earlier entry is applied there; the
        load resumes after the ids it holds, so no id is ever submitted twice.
        """
        done, errors = 0, []
        for attempt in range(attempts):
            leader = self.leader(timeout=timeout)
            if attempt:
                leader = self._barrier(f"barrier-{prefix}-{attempt}", timeout)
                reply = leader.request("has_ids", prefix=prefix, n=n)
                done = n - reply["n_missing"]
                assert not reply["missing"] or reply["missing"][0] == done, reply
            reply = leader.request("load", timeout=timeout + 5, prefix=prefix, n=n,
                                   size=size, max_s=timeout, start=done, threads=threads)
            assert reply["ok"], reply
            errors.extend(reply["errors"])
            if done + len(reply["acked"]) == n:
                return errors
        raise AssertionError(f"could not commit {n} entries in {attempts} attempts: {errors}")

    def _barrier(self, cid: str, timeout: float) -> Node:
        """Commit a fresh entry on the leader; returns that leader (it applied all before)."""
        tries = iter(range(1_000_000))

        def committed() -> Node | None:
            node = self.leader(timeout=timeout)
            reply = node.request("submit", id=f"{cid}-{next(tries)}", timeout=5.0)
            return node if reply["ok"] else None
        return wait_for(committed, timeout, "a barrier entry on the leader")

    def logs(self) -> str:
        out = []
        for node in self.nodes:
            text = node.log_path.read_text() if node.log_path.exists() else ""
            out.append(f"--- {node.name} {node.address} ---\n{text[-6000:]}")
        return "\n".join(out)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
