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
from typing import Any

from omega import __version__
from omega.actors import ChildStartError, SupervisionError, start_tree
from omega.actors.context import NodeContext
from omega.actors.roles import tree_for
from omega.config import NodeConfig, read_role_secrets
from omega.log import setup_logging
from omega.ops.metrics import NodeMetrics

log = logging.getLogger("omega.node")

EXIT_OK = 0
EXIT_FAILURE = 1


def run_node(cfg: NodeConfig) -> int:
    setup_logging(cfg.node.log_level, node=cfg.node.name)
    secrets = read_role_secrets(cfg)  # ConfigError: the CLI exits 2 before any actor starts
    cfg.node.data_dir.mkdir(parents=True, exist_ok=True)
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
