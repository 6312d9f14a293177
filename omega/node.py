"""The node's composition root: config in, supervised actors up, signals handled.

``run_node(cfg)`` is what ``omega-node --role R`` runs. It is the only place that
builds adapters (sockets, stores, the brain) from config — through the role's tree
in ``omega.actors.roles`` — and it owns the process's lifecycle:

- SIGTERM/SIGINT → orderly stop of the tree (reverse start order) → exit 0. A
  watchdog makes sure the process is gone within ``shutdown_timeout_s`` even if
  some child refuses to stop.
- The root supervisor giving up → exit 1, so systemd or Kubernetes restarts it.
- A child failing to start at boot → exit 1 with the reason logged.
- Operator errors found before anything starts — a secret missing or too short, a
  port already taken — raise ``ConfigError`` (the CLI prints one line, exit 2).

Data at rest is owner-only (``omega.datadir``): umask 077, the data directory
0700 (an existing one is tightened), files 0600. A failed start removes the data
directory it created.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from typing import Any

from omega import __version__, datadir
from omega.actors import ChildStartError, SupervisionError, start_tree
from omega.actors.context import NodeContext
from omega.actors.roles import tree_for
from omega.config import NodeConfig, ShardConfig, read_role_secrets
from omega.errors import ConfigError
from omega.log import setup_logging
from omega.netcheck import taken
from omega.ops.metrics import NodeMetrics

log = logging.getLogger("omega.node")

EXIT_OK = 0
EXIT_FAILURE = 1


def tcp_binds(cfg: NodeConfig) -> list[tuple[str, str]]:
    """The ``(config key, address)`` of every TCP port this node will listen on (a role
    that listens on another port adds it here, so a taken port is one clear line)."""
    out = [("node.listen", cfg.node.listen)] if cfg.node.listen else []
    if isinstance(cfg, ShardConfig):
        out.append(("shard.raft.self_address", cfg.shard.raft.self_address))
    admin = getattr(cfg, "admin", None)
    if admin is not None and admin.enabled:
        out.append(("admin.listen", admin.listen))
    return out


def check_ports_free(cfg: NodeConfig) -> None:
    """ConfigError naming the address when another process already holds a port."""
    for key, address in taken(tcp_binds(cfg)):
        raise ConfigError(
            cfg.source, key,
            f"{address} is already in use by another process: stop it, or choose "
            f"another port ({key} in the config"
            + (", or --listen)" if key == "node.listen" else ")"),
        )


def run_node(cfg: NodeConfig) -> int:
    os.umask(0o077)
    setup_logging(cfg.node.log_level, node=cfg.node.name)
    datadir.owner_only_umask()
    secrets = read_role_secrets(cfg)  # ConfigError: the CLI exits 2 before any actor starts
    check_ports_free(cfg)
    created = datadir.prepare(cfg.node.data_dir)
    try:
        return _run(cfg, secrets, created)
    except BaseException:
        _remove_if_created(cfg, created)
        raise


def _remove_if_created(cfg: NodeConfig, created: bool) -> None:
    if created:
        shutil.rmtree(cfg.node.data_dir, ignore_errors=True)


def _run(cfg: NodeConfig, secrets: dict[str, bytes], created: bool) -> int:
    ctx = NodeContext(cfg=cfg, secrets=secrets)
    ctx.publish("metrics", NodeMetrics.for_node(ctx))
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
    # Every thread the tree starts (and the threads those start) inherits a mask that
    # blocks SIGTERM/SIGINT, so the kernel delivers them to this thread alone, which
    # then wakes from its wait at once: no periodic wake-up is needed to notice them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        handle = start_tree(tree_for(cfg, ctx), on_give_up=on_give_up)
    except ChildStartError as exc:
        log.error("a child failed to start; exiting", extra={"fields": {"error": str(exc)}})
        _remove_if_created(cfg, created)
        if "AddressInUse" in exc.reason or "Address in use" in exc.reason:
            # Taken between the check above and the bind: still an operator error.
            raise ConfigError(cfg.source, "node.listen", f"an address is in use: {exc.reason}"
                              ) from None
        return EXIT_FAILURE
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
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

    # Signals interrupt this wait (see the mask above); other threads set the event.
    # The timeout is only a safety net.
    while not ctx.stop_requested.wait(30.0):
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
