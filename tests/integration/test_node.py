"""``omega-node`` as a process: every role starts, answers health over nng from another
process, is operable over its control socket, and exits 0 soon after SIGTERM; bad
config exits 2 naming the file and the key; a root supervisor that gives up exits 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from omega.protocol import CtlReply, CtlRequest, HealthReply
from tests.nodeproc import (
    REPO,
    TEST_SECRETS,
    ask,
    free_port,
    health,
    kill_all,
    node_env,
    run_cli,
    start_node,
    stop,
    wait_for,
)

SHUTDOWN_BUDGET_S = 5.0


def healthy(address: str) -> HealthReply | None:
    reply = health(address)
    return reply if reply is not None and reply.status == "ok" else None


def shard_args(tmp: Path, port: int) -> list[str]:
    cfg = tmp / "shard.toml"
    raft = free_port()
    text = (REPO / "config" / "shard.toml").read_text()
    text = text.replace('self_address = "127.0.0.1:7420"', f'self_address = "127.0.0.1:{raft}"')
    text = text.replace(
        'advertise = "tcp://127.0.0.1:7410"', f'advertise = "tcp://127.0.0.1:{port}"'
    )
    cfg.write_text(text)
    return ["--role", "shard", "--config", str(cfg)]


def hub_args(tmp: Path) -> list[str]:
    """config/hub.toml with its Raft and Pub/Sub ports moved to free ones."""
    cfg = tmp / "hub.toml"
    raft, pub = free_port(), free_port()
    text = (REPO / "config" / "hub.toml").read_text()
    text = text.replace('self_address = "127.0.0.1:7450"', f'self_address = "127.0.0.1:{raft}"')
    text = text.replace('publish = "tcp://127.0.0.1:7445"', f'publish = "tcp://127.0.0.1:{pub}"')
    cfg.write_text(text)
    return ["--role", "hub", "--config", str(cfg)]


@pytest.fixture
def procs() -> Iterator[list]:  # type: ignore[type-arg]
    started: list = []  # type: ignore[type-arg]
    yield started
    kill_all(started)


@pytest.mark.parametrize("role", ["shard", "aggregator", "hub"])
def test_role_starts_answers_health_and_stops_on_sigterm(
    role: str, tmp_path: Path, procs: list
) -> None:  # type: ignore[type-arg]
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    base = (
        shard_args(tmp_path, port)
        if role == "shard"
        else hub_args(tmp_path)
        if role == "hub"
        else ["--role", role, "--config", str(REPO / "config" / f"{role}.toml")]
    )
    log = tmp_path / "node.log"
    proc = start_node([*base, "--data-dir", str(tmp_path / "data"), "--listen", listen], log=log)
    procs.append(proc)
    # A shard says "degraded" until its Raft group has a leader.
    reply = wait_for(lambda: proc.poll() is None and healthy(listen), 60, f"{role} health ok")
    assert reply.role == role
    assert reply.status == "ok"
    # The same over the CLI, from yet another process.
    out = run_cli(["health", listen])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["role"] == role
    code, took = stop(proc)
    assert code == 0, log.read_text()[-2000:]
    assert took < SHUTDOWN_BUDGET_S
    # Logs are JSON lines.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(entry["msg"] == "stopped" for entry in lines)


@pytest.mark.model
def test_tv_starts_answers_health_on_its_local_socket(tmp_path: Path, procs: list) -> None:  # type: ignore[type-arg]
    data = tmp_path / "tv"
    control = f"ipc://{data.resolve()}/control.sock"
    proc = start_node(
        ["--role", "tv", "--config", str(REPO / "config" / "tv.toml"), "--data-dir", str(data)],
        log=tmp_path / "tv.log",
    )
    procs.append(proc)
    reply = wait_for(lambda: proc.poll() is None and health(control), 180, "tv health")
    assert reply.role == "tv"
    code, took = stop(proc)
    assert code == 0
    assert took < SHUTDOWN_BUDGET_S


def test_ctl_tree_and_kill_restart_a_child(tmp_path: Path, procs: list) -> None:  # type: ignore[type-arg]
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    data = tmp_path / "hub"
    proc = start_node(
        [
            *hub_args(tmp_path),
            "--data-dir",
            str(data),
            "--listen",
            listen,
        ]
    )
    procs.append(proc)
    wait_for(lambda: health(listen), 30, "hub health")
    control = f"ipc://{data.resolve()}/control.sock"
    out = run_cli(["ctl", "--control", control, "kill", "api"])
    assert out.returncode == 0, out.stderr

    def api_restarted() -> dict | None:  # type: ignore[type-arg]
        reply = ask(control, CtlRequest(command="tree", target=""))
        assert isinstance(reply, CtlReply)
        api = next(c for c in reply.payload["children"] if c["name"] == "api")
        return api if api["restarts"] == 1 and api["state"] == "running" else None

    wait_for(api_restarted, 15, "api restarted")
    wait_for(lambda: health(listen), 15, "hub health after restart")
    tree = run_cli(["ctl", "--data-dir", str(data), "tree"])
    assert tree.returncode == 0, tree.stderr
    assert "restarts=1" in tree.stdout
    assert stop(proc)[0] == 0


def test_root_supervisor_giving_up_exits_nonzero(tmp_path: Path, procs: list) -> None:  # type: ignore[type-arg]
    cfg = tmp_path / "hub.toml"
    port = free_port()
    cfg.write_text(
        f'role = "hub"\n[node]\nlisten = "tcp://127.0.0.1:{port}"\n'
        f'data_dir = "{tmp_path / "d"}"\n[supervision]\nmax_restarts = 0\n'
        f'[hub.raft]\nself_address = "127.0.0.1:{free_port()}"\n'
    )
    proc = start_node(["--role", "hub", "--config", str(cfg)])
    procs.append(proc)
    wait_for(lambda: health(f"tcp://127.0.0.1:{port}"), 30, "hub health")
    out = run_cli(["ctl", "--config", str(cfg), "kill", "api"])
    assert out.returncode == 0, out.stderr
    assert proc.wait(15) == 1


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[node]\nnmae = "x"\n', "node.nmae"),
        ('[node]\nshutdown_timeout_s = "soon"\n', "node.shutdown_timeout_s"),
        ("[supervision]\nmax_restarts = -1\n", "supervision.max_restarts"),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    out = run_cli(["--role", "hub", "--config", str(cfg)])
    assert out.returncode == 2
    assert str(cfg) in out.stderr
    assert key in out.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    out = run_cli(["--role", "aggregator", "--config", str(missing)])
    assert out.returncode == 2
    assert str(missing) in out.stderr
    assert "not found" in out.stderr


def test_missing_secret_exits_2_before_starting(tmp_path: Path) -> None:
    env = node_env()
    del env["OMEGA_FLEET_KEY"]
    out = run_cli(
        [
            "--role",
            "shard",
            "--config",
            str(REPO / "config" / "shard.toml"),
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
    )
    assert out.returncode == 2
    assert "secrets.fleet_key" in out.stderr
    assert "OMEGA_FLEET_KEY" in out.stderr


def test_help_lists_the_roles() -> None:
    out = run_cli(["--help"])
    assert out.returncode == 0
    for role in ("tv", "shard", "aggregator", "hub"):
        assert role in out.stdout
    assert set(TEST_SECRETS) >= {"OMEGA_FLEET_KEY"}


def test_weak_raft_password_exits_2_before_starting(tmp_path: Path) -> None:
    env = node_env({"OMEGA_RAFT_PASSWORD": "a" * 24})
    out = run_cli(["--role", "shard", "--config", str(REPO / "config" / "shard.toml"),
                   "--data-dir", str(tmp_path)], env=env)
    assert out.returncode == 2, out.stderr
    assert "secrets.raft_password" in out.stderr
    assert "distinct characters" in out.stderr


def test_dev_mode_off_loopback_exits_2_at_validation(tmp_path: Path) -> None:
    cfg = tmp_path / "shard.toml"
    text = (REPO / "config" / "shard.toml").read_text()
    cfg.write_text(text.replace('self_address = "127.0.0.1:7420"', 'self_address = "10.1.2.3:7420"')
                   .replace("dev_mode = false", "dev_mode = true"))
    out = run_cli(["--role", "shard", "--config", str(cfg), "--data-dir", str(tmp_path)],
                  env=node_env())
    assert out.returncode == 2, out.stderr
    assert "dev_mode" in out.stderr and "loopback" in out.stderr
