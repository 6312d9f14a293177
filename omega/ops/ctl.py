"""Operator commands against a running node: ``omega-node ctl ...`` and ``omega-node health``.

They speak the same protocol as everything else (``CtlRequest``/``Health`` over
nng), to the node's local control socket (``ipc://``) or to its listen address.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omega.config import ROLES, Overrides, load_config, read_toml
from omega.errors import ConfigError, OmegaError
from omega.protocol import (
    CtlReply,
    CtlRequest,
    ErrorReply,
    Health,
    HealthReply,
    Message,
    decode,
    encode,
)
from omega.transport import RpcClient, TransportSettings


class RemoteError(OmegaError):
    """The node answered with an ErrorReply."""

    def __init__(self, reply: ErrorReply) -> None:
        self.reply = reply
        super().__init__(f"{reply.code}: {reply.message}")


def resolve_control(args: argparse.Namespace) -> str:
    """The control socket from --control, else from the node's config / data dir."""
    if getattr(args, "control", None):
        return str(args.control)
    config: Path | None = getattr(args, "config", None)
    role = getattr(args, "role", None)
    if config is not None and role is None:
        declared = read_toml(config).get("role")
        if declared not in ROLES:
            raise ConfigError(str(config), "role", "set `role = ...` in the file or pass --role")
        role = declared
    if config is None and getattr(args, "data_dir", None) is None:
        raise ConfigError(
            "<command line>",
            "--config",
            "say which node: --config FILE, --data-dir DIR or --control ADDRESS",
        )
    cfg = load_config(role or "hub", config, Overrides(data_dir=getattr(args, "data_dir", None)))
    return cfg.node.control_address


def request(address: str, msg: Message, timeout_s: float) -> Message:
    """One request, one typed reply; an ErrorReply becomes RemoteError."""
    settings = TransportSettings(request_timeout_s=timeout_s, retries=0)
    with RpcClient(address, settings) as client:
        reply = decode(client.request(encode(msg), timeout_s=timeout_s))
    if isinstance(reply, ErrorReply):
        raise RemoteError(reply)
    return reply


def run_ctl(args: argparse.Namespace) -> int:
    address = resolve_control(args)
    target = getattr(args, "name", "") or ""
    try:
        reply = request(address, CtlRequest(command=args.ctl_command, target=target), args.timeout)
    except RemoteError as exc:
        print(f"omega-node ctl: {exc}", file=sys.stderr)
        return 1
    assert isinstance(reply, CtlReply)
    if args.ctl_command == "tree":
        print_tree(reply.payload)
    elif args.ctl_command == "metrics" and isinstance(reply.payload, str):
        print(reply.payload, end="")
    else:
        print(json.dumps(reply.payload, indent=2, sort_keys=True, default=str))
    return 0


def print_tree(node: Any, depth: int = 0) -> None:
    if not isinstance(node, dict):
        print(json.dumps(node))
        return
    pad = "  " * depth
    extra = f" strategy={node['strategy']}" if "strategy" in node else ""
    last = f" last_exit={node['last_exit']!r}" if node.get("last_exit") else ""
    print(
        f"{pad}{node['name']:<12} {node['kind']:<10} {node['state']:<10} "
        f"restarts={node['restarts']} ask_failures={node.get('ask_failures', 0)}{extra}{last}"
    )
    for child in node.get("children", []):
        print_tree(child, depth + 1)


def run_health(args: argparse.Namespace) -> int:
    try:
        reply = request(args.address, Health(), args.timeout)
    except RemoteError as exc:
        print(f"omega-node health: {exc}", file=sys.stderr)
        return 1
    assert isinstance(reply, HealthReply)
    print(
        json.dumps(
            {
                "role": reply.role,
                "name": reply.name,
                "status": reply.status,
                "uptime_s": reply.uptime_s,
                "version": reply.version,
            }
        )
    )
    return 0 if reply.status == "ok" else 1
