"""A server in a separate process, reached over 127.0.0.1 and ipc://."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omega.transport import RpcClient, TransportSettings

REPO = Path(__file__).resolve().parents[2]

# The child serves until its stdin closes, then closes the server and exits 0.
SERVER_SCRIPT = """
import os, sys
from omega.transport import RpcServer, TransportSettings
srv = RpcServer(sys.argv[1], lambda b: b"pid%d:" % os.getpid() + b,
                TransportSettings(workers=2), lambda e: b"ERR")
srv.start()
print(srv.address, flush=True)
sys.stdin.read()
srv.close()
print("closed", srv.stats()["replies"], flush=True)
"""


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"child printed nothing within {timeout} s")
        return proc.stdout.readline().strip()
    finally:
        sel.close()


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_server_in_another_process(kind: str, tmp_path: Path) -> None:
    listen = "tcp://127.0.0.1:0" if kind == "tcp" else f"ipc://{tmp_path}/child.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, listen], env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        _talk_to(proc, kind, listen)


def _talk_to(proc: subprocess.Popen[str], kind: str, listen: str) -> None:
    try:
        address = _readline(proc, 60)
        assert address.startswith(listen.split(":0")[0] if kind == "tcp" else listen)
        settings = TransportSettings(retries=1, request_timeout_s=10)
        with RpcClient(address, settings) as c:
            replies = [c.request(b"n%d" % i) for i in range(20)]
        assert replies == [b"pid%d:n%d" % (proc.pid, i) for i in range(20)]
        assert proc.pid != os.getpid()
        assert proc.stdin is not None
        proc.stdin.close()
        t0 = time.monotonic()
        assert _readline(proc, 30) == "closed 20"
        assert proc.wait(30) == 0
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
