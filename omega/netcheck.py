"""Loopback TCP ports: is one taken, which ones are free.

Used before a node or the local cluster binds anything, so that a port already in
use is one clear line naming the address (exit 2) rather than a traceback from
deep inside a socket library; and by the tests and the simulator to pick ports.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

__all__ = ["free_ports", "in_use", "split_host_port", "taken"]


def split_host_port(address: str) -> tuple[str, int] | None:
    """``tcp://h:p``, ``tls+tcp://h:p`` or ``h:p`` → ``(h, p)``; None for other schemes."""
    for scheme in ("tcp://", "tls+tcp://"):
        if address.startswith(scheme):
            address = address[len(scheme):]
            break
    else:
        if "://" in address:
            return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "0.0.0.0", int(port)


def in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails because something holds it (as a listener would).

    SO_REUSEADDR as nng and PySyncObj set it: a port in TIME_WAIT counts as free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def taken(addresses: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(name, address)`` pairs whose TCP address is in use (other schemes skipped)."""
    out = []
    for name, address in addresses:
        hp = split_host_port(address)
        if hp is not None and hp[1] != 0 and in_use(*hp):
            out.append((name, address))
    return out


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports the kernel had free on ``host`` (all held open while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
