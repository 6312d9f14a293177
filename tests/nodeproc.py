"""Run real ``omega-node`` processes in tests: free ports, secrets, waiting with deadlines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omega.errors import OmegaError
from omega.netcheck import free_ports
from omega.protocol import Health, HealthReply, Message, decode, encode
from omega.transport import RpcClient, TransportSettings
from omega.waiting import wait_for

# The one wait_for and free_ports, from omega (the simulator uses them too).
__all__ = ["free_port", "free_ports", "wait_for"]

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

TEST_SECRETS = {
    "OMEGA_FLEET_KEY": "test-fleet-key-0123456789abcdef",
    "OMEGA_DEDUP_SECRET": "test-dedup-secret-0123456789abcdef",
    "OMEGA_RAFT_PASSWORD": "test-raft-password-0123456789",
}


def free_port() -> int:
    return free_ports(1)[0]


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TEST_SECRETS)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_node(
    args: Sequence[str], *, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    if log is None:
        return subprocess.Popen(
            [sys.executable, "-m", "omega.cli", *args],
            cwd=REPO,
            env=env or node_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "omega.cli", *args],
            cwd=REPO,
            env=env or node_env(),
            stdout=out,
            stderr=out,
        )


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omega.cli", *args],
        cwd=REPO,
        env=env or node_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ask(address: str, msg: Message, timeout: float = 2.0) -> Message:
    settings = TransportSettings(request_timeout_s=timeout, retries=0)
    with RpcClient(address, settings) as client:
        return decode(client.request(encode(msg), timeout_s=timeout))


def health(address: str, timeout: float = 1.0) -> HealthReply | None:
    try:
        reply = ask(address, Health(), timeout)
    except OmegaError:
        return None
    return reply if isinstance(reply, HealthReply) else None


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> tuple[int, float]:
    """SIGTERM; returns (exit code, seconds it took). Kills it if it overstays."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"node did not exit within {timeout}s of SIGTERM") from None
    return code, time.monotonic() - t0


def kill_all(procs: Sequence[subprocess.Popen[Any]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
