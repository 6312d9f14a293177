"""Operator commands against a running node: ``omega-node ctl ...`` and ``omega-node health``.

They speak the same protocol as everything else (``CtlRequest``/``Health`` over
nng), to the node's local control socket (``ipc://``) or to its listen address.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from omega.config import ROLES, Overrides, load_config, read_toml
from omega.errors import ConfigError, OmegaError, RequestTimeout, TransportError
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
from omega.protocol.limits import MAX_FRAME_BYTES
from omega.transport import RpcClient, TransportSettings


class RemoteError(OmegaError):
    """The node answered with an ErrorReply."""

    def __init__(self, reply: ErrorReply) -> None:
        self.reply = reply
        super().__init__(f"{reply.code}: {reply.message}")


class NodeUnreachable(OmegaError):
    """No node answers on the address; the message says what to do."""


#: How to start a node of each role, for the "no node answers" hint.
START_HINT = {
    "tv": "omega-node --role tv --config config/tv.toml",
    "shard": "omega-node --role shard --config config/shard.toml",
    "aggregator": "omega-node --role aggregator --config config/aggregator.toml",
    "hub": "omega-node --role hub --config config/hub.toml",
}


def unreachable(address: str, reason: str, role: str | None = None) -> NodeUnreachable:
    """The error for a node that does not answer, with what the operator can do."""
    start = START_HINT.get(role or "", "omega-node --role ROLE --config FILE")
    todo = (f"Start it first, in another terminal, and wait for its \"started\" log line: "
            f"{start} (or name the running node with --config, --data-dir or --control).")
    if address.startswith("ipc://"):
        path = Path(address[len("ipc://"):])
        if not path.exists():
            return NodeUnreachable(f"no node is running with data directory {path.parent} "
                                   f"(no control socket {path.name} there). {todo}")
        if not os.access(path, os.W_OK):
            return NodeUnreachable(
                f"you may not use the control socket {path}: it belongs to the node's user "
                "(mode 0600). Run this command as that user."
            )
    return NodeUnreachable(f"no node answers on {address} ({reason}). {todo}")


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


def request(address: str, msg: Message, timeout_s: float, role: str | None = None) -> Message:
    """One request, one typed reply; an ErrorReply becomes RemoteError, no answer
    NodeUnreachable (its message says how to start the node of ``role``)."""
    if address.startswith("ipc://") and not os.access(address[len("ipc://"):], os.W_OK):
        raise unreachable(address, "", role)  # no socket file, or not ours: no need to wait
    settings = TransportSettings(request_timeout_s=timeout_s, retries=0,
                                 recv_max_size=MAX_FRAME_BYTES)
    try:
        with RpcClient(address, settings) as client:
            reply = decode(client.request(encode(msg), timeout_s=timeout_s))
    except RequestTimeout as exc:
        raise NodeUnreachable(
            f"{address} did not answer within {timeout_s:g} s ({exc}): the node may be busy "
            "(a catalog import embeds its titles); try again with a longer --timeout"
        ) from None
    except TransportError as exc:
        raise unreachable(address, str(exc), role) from None
    if isinstance(reply, ErrorReply):
        raise RemoteError(reply)
    return reply


def run_ctl(args: argparse.Namespace) -> int:
    address = resolve_control(args)
    target = getattr(args, "name", "") or ""
    for flag, action in (("key_id", "rotate-key"), ("release", "trigger")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if target != action:
            print(f"omega-node ctl: --{flag.replace('_', '-')} goes with `federation "
                  f"{action}` only", file=sys.stderr)
            return 2
        target = f"{action}={value}"
    try:
        reply = request(address, CtlRequest(command=args.ctl_command, target=target),
                        args.timeout, getattr(args, "role", None))
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
