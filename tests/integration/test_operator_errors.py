"""Operator errors get one clear line and exit 2, before anything starts: a port in
use, a secret too short, a control socket on the network. A failed start leaves no
data directory. ``--help`` needs no engine; a missing dependency says how to install."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodeproc import REPO, free_port, node_env, run_cli


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process (here: this one) is listening on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("role", ["shard", "hub", "aggregator"])
def test_listen_port_in_use_is_one_line_exit_2_and_no_data_dir(
    role: str, held_port: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    address = f"tcp://127.0.0.1:{held_port}"
    out = run_cli(["--role", role, "--config", str(REPO / "config" / f"{role}.toml"),
                   "--data-dir", str(data), "--listen", address])
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert f"{address} is already in use" in line and "node.listen" in line
    assert not data.exists()


def test_raft_port_in_use_names_the_raft_address(held_port: int, tmp_path: Path) -> None:
    cfg = tmp_path / "shard.toml"
    text = (REPO / "config" / "shard.toml").read_text()
    cfg.write_text(text.replace('self_address = "127.0.0.1:7420"',
                                f'self_address = "127.0.0.1:{held_port}"'))
    out = run_cli(["--role", "shard", "--config", str(cfg), "--data-dir", str(tmp_path / "d"),
                   "--listen", f"tcp://127.0.0.1:{free_port()}"])
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "shard.raft.self_address" in line and str(held_port) in line


@pytest.mark.parametrize("secret", ["OMEGA_FLEET_KEY", "OMEGA_DEDUP_SECRET", "OMEGA_RAFT_PASSWORD"])
def test_a_short_secret_is_refused_at_load_naming_it_and_the_rule(
    secret: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    out = run_cli(["--role", "shard", "--config", str(REPO / "config" / "shard.toml"),
                   "--data-dir", str(data), "--listen", f"tcp://127.0.0.1:{free_port()}"],
                  env=node_env({secret: "short"}))
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert f"environment variable {secret} holds 5 bytes" in line
    assert "at least 16 bytes" in line
    assert not data.exists()


def test_a_network_control_address_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text((REPO / "config" / "hub.toml").read_text().replace(
        'log_level = "info"', 'log_level = "info"\ncontrol = "tcp://127.0.0.1:7999"'))
    out = run_cli(["--role", "hub", "--config", str(cfg), "--data-dir", str(tmp_path / "d")])
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "node.control" in line and "must be an ipc:// address" in line


def test_local_cluster_checks_its_ports_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        shard_a = s.getsockname()[1]
        base = shard_a - 10  # the first shard's device port is base + 10
        if not 1024 <= base <= 65000:
            pytest.skip("the kernel gave a port the cluster cannot be based under")
        out = run_cli(["local-cluster", "--base-port", str(base), "--data-dir",
                       str(tmp_path / "cluster")])
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert f"tcp://127.0.0.1:{shard_a}" in line and "shard-a" in line
    assert "health" not in out.stdout  # nothing was started, nothing reached
    assert not (tmp_path / "cluster").exists()


_BLOCK_ENGINES = (
    "import sys\n"
    "for m in ('pynng', 'numpy', 'msgpack', 'faiss', 'onnxruntime', 'lmdb', 'pysyncobj',\n"
    "          'pykka', 'tokenizers', 'tqdm'):\n"
    "    sys.modules[m] = None  # as if not installed\n"
    "from omega.cli import main\n"
)


def _run_without_engines(*args: str) -> subprocess.CompletedProcess[str]:
    code = _BLOCK_ENGINES + f"sys.exit(main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args", [["--help"], ["tv", "--help"], ["tv", "recommend", "--help"],
                                  ["local-cluster", "--help"], ["bench", "--help"]])
def test_help_needs_no_engine(args: list[str]) -> None:
    out = _run_without_engines(*args)
    assert out.returncode == 0, out.stderr
    assert "usage: omega-node" in out.stdout


def test_a_missing_dependency_says_how_to_install() -> None:
    out = _run_without_engines("health", "tcp://127.0.0.1:1")
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[0]
    assert "is missing" in line and "Traceback" not in out.stderr
    assert "pip install -e ." in out.stderr


def test_a_node_that_fails_to_start_leaves_no_data_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "tv.toml"
    cfg.write_text('role = "tv"\n[brain.embedder]\nmodel_path = "/nonexistent/model.onnx"\n')
    data = tmp_path / "data"
    out = run_cli(["--role", "tv", "--config", str(cfg), "--data-dir", str(data)], timeout=120)
    assert out.returncode == 1
    assert "the model file /nonexistent/model.onnx does not exist" in out.stderr
    assert not data.exists()
