"""The node's composition root: config in, supervised actors up, signals handled.

``run_node(cfg)`` is what ``omega-node --role R`` runs. It is the only place that
builds adapters (sockets, stores, the brain) from config — through the role's tree
in ``omega.actors.roles`` — and it owns the process's lifecycle:

- SIGTERM/SIGINT → orderly stop of the tree (reverse start order) → exit 0. A
  watchdog makes sure the process is gone within ``shutdown_timeout_s`` even if
  some child refuses to stop.
- The root supervisor giving up → exit 1, so systemd or Kubernetes restarts it.
- A child failing to start at boot → exit 1 with the reason logged.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from omega import __version__
from omega.actors import ChildStartError, SupervisionError, start_tree
from omega.actors.roles import tree_for
from omega.config import NodeConfig
from omega.errors import ConfigError
from omega.log import setup_logging

log = logging.getLogger("omega.node")

EXIT_OK = 0
EXIT_FAILURE = 1
MIN_RAFT_PASSWORD_BYTES = 16


@dataclass
class NodeContext:
    """What the role's actors share at run time. Built once by ``run_node``.

    ``resources`` holds the objects that owner actors publish when they start (the
    store, the shard service, the brain) so that the thin server actors can reach
    them; it is replaced entry by entry, under ``lock``, when an owner restarts.
    """

    cfg: NodeConfig
    secrets: dict[str, bytes] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    handle: Any = None
    resources: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    version: str = __version__

    def publish(self, name: str, obj: Any) -> None:
        with self.lock:
            self.resources[name] = obj

    def withdraw(self, name: str, obj: Any) -> None:
        with self.lock:
            if self.resources.get(name) is obj:
                del self.resources[name]

    def resource(self, name: str) -> Any:
        with self.lock:
            return self.resources.get(name)

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at


def read_role_secrets(cfg: NodeConfig) -> dict[str, bytes]:
    """Resolve the secrets the role needs before any actor starts (ConfigError if absent)."""
    from omega.config import ShardConfig, read_secret

    out: dict[str, bytes] = {}
    if isinstance(cfg, ShardConfig):
        out["fleet_key"] = _secret(cfg, "fleet_key")
        out["dedup_secret"] = _secret(cfg, "dedup_secret")
        raft = cfg.shard.raft
        pw = read_secret(
            cfg.secrets.raft_password,
            source=cfg.source,
            key="secrets.raft_password",
            required=not raft.dev_mode,
        )
        if pw is not None:
            if len(pw) < MIN_RAFT_PASSWORD_BYTES:
                raise ConfigError(
                    cfg.source,
                    "secrets.raft_password",
                    f"the Raft password must be at least {MIN_RAFT_PASSWORD_BYTES} "
                    "bytes (its port speaks pickle: never weaken it)",
                )
            out["raft_password"] = pw
    admin = getattr(cfg, "admin", None)
    if admin is not None and admin.enabled:
        out.update(_admin_tokens(cfg))
    return out


def node_metrics(ctx: NodeContext) -> Any:
    """The node's Prometheus registry (``omega.ops.metrics``); ``[admin] metrics = false``
    leaves it empty and times nothing."""
    from omega.ops.metrics import NodeMetrics

    admin = getattr(ctx.cfg, "admin", None)
    return NodeMetrics(ctx, enabled=admin.metrics if admin is not None else True)


def _admin_tokens(cfg: NodeConfig) -> dict[str, bytes]:
    """The admin API's tokens (each optional), checked for length and distinctness."""
    from omega.config import read_secret
    from omega.ops.http.auth import SECRET_OF_ROLE, Tokens

    out: dict[str, bytes] = {}
    for key in SECRET_OF_ROLE.values():
        value = read_secret(getattr(cfg.secrets, key), source=cfg.source, key=f"secrets.{key}",
                            required=False)
        if value is not None:
            out[key] = value
    Tokens.from_secrets(out, cfg.source)  # ConfigError for a weak or shared token
    return out


def _secret(cfg: NodeConfig, name: str) -> bytes:
    from omega.config import read_secret

    value = read_secret(getattr(cfg.secrets, name), source=cfg.source, key=f"secrets.{name}")
    assert value is not None
    return value


def run_node(cfg: NodeConfig) -> int:
    setup_logging(cfg.node.log_level, node=cfg.node.name)
    secrets = read_role_secrets(cfg)  # ConfigError: the CLI exits 2 before any actor starts
    cfg.node.data_dir.mkdir(parents=True, exist_ok=True)
    ctx = NodeContext(cfg=cfg, secrets=secrets)
    ctx.publish("metrics", node_metrics(ctx))
    exit_code = [EXIT_OK]

    def on_give_up(error: SupervisionError) -> None:
        log.error("root supervisor gave up; exiting", extra={"fields": {"error": str(error)}})
        exit_code[0] = EXIT_FAILURE
        ctx.stop_requested.set()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info(
            "signal received; stopping", extra={"fields": {"signal": signal.Signals(signum).name}}
        )
        ctx.stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log.info(
        "starting",
        extra={
            "fields": {
                "role": cfg.role,
                "config": cfg.source,
                "data_dir": str(cfg.node.data_dir),
                "pid": os.getpid(),
                "version": __version__,
            }
        },
    )
    try:
        handle = start_tree(tree_for(cfg, ctx), on_give_up=on_give_up)
    except ChildStartError as exc:
        log.error("a child failed to start; exiting", extra={"fields": {"error": str(exc)}})
        return EXIT_FAILURE
    ctx.handle = handle
    log.info(
        "started",
        extra={
            "fields": {
                "role": cfg.role,
                "control": cfg.node.control_address,
                "listen": cfg.node.listen,
            }
        },
    )

    # Wake up regularly so Python runs the signal handlers promptly.
    while not ctx.stop_requested.wait(0.2):
        pass

    timeout = cfg.node.shutdown_timeout_s
    watchdog = threading.Timer(timeout, _force_exit, args=(timeout,))
    watchdog.daemon = True
    watchdog.start()
    stopped = handle.stop(timeout=max(0.1, timeout - 0.5))
    watchdog.cancel()
    if not stopped:
        log.error("shutdown timed out; exiting anyway", extra={"fields": {"timeout_s": timeout}})
        return EXIT_FAILURE
    log.info(
        "stopped",
        extra={"fields": {"exit_code": exit_code[0], "uptime_s": round(ctx.uptime_s(), 3)}},
    )
    return exit_code[0]


def _force_exit(timeout: float) -> None:
    log.error(
        "shutdown exceeded its timeout; forcing exit", extra={"fields": {"timeout_s": timeout}}
    )
    logging.shutdown()
    os._exit(EXIT_FAILURE)
