"""The TV's local API path, as a user drives it: a real TV node (real ONNX model, real
LMDB, real nng control socket) and ``omega-node tv import-catalog|observe|recommend|
status`` run as separate processes; what the user sees when it goes wrong; and its
data at rest: owner-only even under umask 000, and another local user refused."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from omega.protocol import HealthReply
from tests.nodeproc import REPO, health, kill_all, run_cli, stop, wait_for

DEMO = REPO / "omega" / "sim" / "demo_catalog.jsonl"
NOBODY = 65534


def _ok(reply: HealthReply | None) -> bool:
    return reply is not None and reply.status == "ok"  # "starting" until the tree is up


def _owner_only_umask() -> None:
    os.umask(0)  # the worst umask: the node must not depend on the caller's


@pytest.fixture(scope="module")
def tv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One TV node for the module, started under umask 000; yields its data dir."""
    root = tmp_path_factory.mktemp("tv")
    data = root / "data"
    log = root / "tv.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omega.cli", "--role", "tv", "--config",
             str(REPO / "config" / "tv.toml"), "--data-dir", str(data)],
            cwd=REPO, stdout=out, stderr=out, preexec_fn=_owner_only_umask,
        )
    try:
        control = f"ipc://{data}/control.sock"
        wait_for(lambda: proc.poll() is None and _ok(health(control)), 240,
                 "the TV node (it prepares the ONNX model on its first start)")
        yield data
        code, _ = stop(proc)
        assert code == 0, log.read_text()[-2000:]
    finally:
        kill_all([proc])


def tv_cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["tv", "--data-dir", str(data), *args], timeout=300)


def test_import_observe_recommend_status(tv: Path) -> None:
    out = tv_cli(tv, "import-catalog", str(DEMO))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["added"] + json.loads(out.stdout)["unchanged"] == 50

    out = tv_cli(tv, "observe", "demo-001", "0.95")  # Heat (1995)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["observed"] == "demo-001"

    out = tv_cli(tv, "recommend", "-k", "5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(".")[0].strip() for line in lines] == ["1", "2", "3", "4", "5"]
    titles = {json.loads(x)["id"]: json.loads(x)["title"] for x in DEMO.read_text().splitlines()}
    # Titles, not ids, with a reason; the watched title is not recommended.
    assert all(any(t in line for t in titles.values()) for line in lines), lines
    assert not any("demo-0" in line for line in lines)
    assert not any("Heat (1995)  —" in line for line in lines)
    assert all(" — " in line for line in lines)

    out = tv_cli(tv, "recommend", "-k", "5", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(titles[r["content_id"]] == r["title"] and r["reason"] for r in rows)
    assert "demo-001" not in {r["content_id"] for r in rows}

    out = tv_cli(tv, "status")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["catalog"] == 50 and status["episodes"] >= 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["observe", "demo-001", "1.5"], "watch_fraction must be between 0 and 1"),
        (["observe", "demo-001", "half"], "watch_fraction must be a number"),
        (["recommend", "-k", "0"], "-k must be between 1 and 100"),
        (["recommend", "-k", "101"], "-k must be between 1 and 100"),
        (["--timeout", "0", "status"], "--timeout must be between 0.1 and 3600"),
    ],
)
def test_out_of_range_arguments_exit_2_with_the_limits(
    tv: Path, args: list[str], expected: str
) -> None:
    out = tv_cli(tv, *args)
    assert out.returncode == 2, out
    assert expected in out.stderr and "usage:" in out.stderr


def test_an_unknown_title_says_to_import_a_catalog(tv: Path) -> None:
    out = tv_cli(tv, "observe", "no-such-title", "0.5")
    assert out.returncode == 1
    assert "unknown content id 'no-such-title'" in out.stderr
    assert "import-catalog" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_running_tv_says_how_to_start_it(tmp_path: Path) -> None:
    out = tv_cli(tmp_path / "nothing-here", "status")
    assert out.returncode == 1
    assert "no node is running with data directory" in out.stderr
    assert "omega-node --role tv --config config/tv.toml" in out.stderr
    assert "Traceback" not in out.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_data_at_rest_is_owner_only_under_umask_000(tv: Path) -> None:
    memory = tv / "brain" / "memory"
    assert _mode(tv) == 0o700
    assert _mode(tv / "brain") == 0o700
    assert _mode(memory) == 0o700
    assert _mode(memory / "data.mdb") == 0o600
    assert _mode(memory / "lock.mdb") == 0o600
    assert _mode(tv / "brain" / "brain.lock") == 0o600
    sock = tv / "control.sock"
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert _mode(sock) == 0o600
    for path in tv.rglob("*"):  # nothing in the tree is open to the group or others
        if not path.is_symlink():
            assert _mode(path) & 0o077 == 0, path


def _connect_as(uid: int, path: Path) -> int:
    """Connect to ``path`` as ``uid`` in a forked child: 0, or the errno it failed with."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
        except OSError as exc:
            code = exc.errno or 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_another_local_user_cannot_reach_the_control_socket(tv: Path) -> None:
    import errno

    sock = tv / "control.sock"
    assert _connect_as(os.geteuid(), sock) == 0  # the node's own user gets in
    assert _connect_as(NOBODY, sock) == errno.EACCES
    # Even with the directory opened up, the socket file itself refuses them.
    os.chmod(tv, 0o755)
    try:
        assert _connect_as(NOBODY, sock) == errno.EACCES
    finally:
        os.chmod(tv, 0o700)
