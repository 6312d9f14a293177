"""Connection limits for a listening socket: per source address, in total, idle time.

nng has no connection cap: a peer that completes the 8-byte SP handshake and then
sends nothing is held forever, one file descriptor each. 20,000 of them from one
address filled a leader's descriptor table (docs/reliability.md). ``ConnectionGuard``
is the bookkeeping behind ``RpcServer``'s pipe callbacks, with no nng in it (unit
tested alone):

- ``admit(pipe, address)`` when nng has a new handshaked pipe: refused (the server
  closes it at once) when its address already holds ``max_per_address`` pipes, or
  when ``max_total`` pipes are open;
- ``seen(pipe)`` when a request arrives on it; ``idle(now)`` lists the pipes
  silent for ``idle_timeout_s`` (the server's reaper closes them; a real client's
  nng dialer reconnects by itself when it next has something to send);
- ``removed(pipe)`` when nng drops it.

Refusals are counted and logged (one line per kind per 10 s, with the count of
the lines skipped); ``saturated()`` says whether the total cap refused anything
recently, which a leader takes as "cannot serve devices" (it gives up leadership).
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omega.throttled_log import ThrottledLog

log = logging.getLogger("omega.transport.guard")


@dataclass(frozen=True)
class ConnectionLimits:
    #: Pipes one source address may hold (0: no per-address limit).
    max_per_address: int
    #: Pipes open at once on this socket.
    max_total: int
    #: Close a pipe that carried no request for this long (0: never).
    idle_timeout_s: float


class ConnectionGuard:
    def __init__(self, limits: ConnectionLimits, name: str, *,
                 clock: Callable[[], float] = time.monotonic,
                 log_interval_s: float = 10.0) -> None:
        self.limits = limits
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._pipes: dict[int, tuple[str | None, float]] = {}  # id -> (address, opened)
        self._last_seen: dict[int, float] = {}
        self._per_address: dict[str, int] = {}
        self._log = ThrottledLog(log, log_interval_s)
        self._last_total_refusal = float("-inf")
        self.refused_per_address = 0
        self.refused_total = 0
        self.idle_closed = 0
        self.admitted = 0
        self.peak = 0

    def admit(self, pipe: int, address: str | None) -> str | None:
        """Register ``pipe`` from ``address`` (None: not an IP peer); or say why not."""
        lim = self.limits
        with self._lock:
            if len(self._pipes) >= lim.max_total:
                self.refused_total += 1
                self._last_total_refusal = self._clock()
                reason = "total"
            elif (address is not None and lim.max_per_address
                  and self._per_address.get(address, 0) >= lim.max_per_address):
                self.refused_per_address += 1
                reason = "per_address"
            else:
                now = self._clock()
                self._pipes[pipe] = (address, now)
                self._last_seen[pipe] = now
                if address is not None:
                    self._per_address[address] = self._per_address.get(address, 0) + 1
                self.admitted += 1
                self.peak = max(self.peak, len(self._pipes))
                return None
            open_now = len(self._pipes)
            held = self._per_address.get(address, 0) if address is not None else 0
        if reason == "total":
            self._log.event(f"{self.name}:total", "connection refused: the socket holds its "
                            "maximum of connections", {"server": self.name, "open": open_now,
                                                       "max_total": lim.max_total,
                                                       "address": address})
        else:
            self._log.event(f"{self.name}:per_address", "connection refused: its address "
                            "holds the maximum of connections per address", {
                                "server": self.name, "address": address, "held": held,
                                "max_per_address": lim.max_per_address})
        return reason

    def removed(self, pipe: int) -> None:
        with self._lock:
            entry = self._pipes.pop(pipe, None)
            self._last_seen.pop(pipe, None)
            if entry is None or entry[0] is None:
                return
            address = entry[0]
            left = self._per_address.get(address, 0) - 1
            if left > 0:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)

    def seen(self, pipe: int) -> None:
        """A request arrived on ``pipe`` (called per request: kept to one dict store)."""
        if pipe in self._pipes:
            self._last_seen[pipe] = self._clock()

    def idle(self, now: float | None = None) -> list[int]:
        """Pipes silent for ``idle_timeout_s`` (counted as closed by the caller's reaper)."""
        timeout = self.limits.idle_timeout_s
        if timeout <= 0:
            return []
        cutoff = (self._clock() if now is None else now) - timeout
        with self._lock:
            late = [p for p, t in self._last_seen.items() if t < cutoff]
        if late:
            self.idle_closed += len(late)
            self._log.event(f"{self.name}:idle", "idle connections closed", {
                "server": self.name, "closed": len(late),
                "idle_timeout_s": timeout})
        return late

    def saturated(self, within_s: float) -> bool:
        """Whether the total cap refused a connection in the last ``within_s`` seconds."""
        return self._clock() - self._last_total_refusal < within_s

    def stats(self) -> dict[str, Any]:
        with self._lock:
            busiest = max(self._per_address.values(), default=0)
            return {"open": len(self._pipes), "peak": self.peak,
                    "addresses": len(self._per_address), "busiest_address": busiest,
                    "admitted": self.admitted,
                    "refused_per_address": self.refused_per_address,
                    "refused_total": self.refused_total, "idle_closed": self.idle_closed,
                    "max_per_address": self.limits.max_per_address,
                    "max_total": self.limits.max_total,
                    "idle_timeout_s": self.limits.idle_timeout_s}


def peer_host(remote: Any) -> str | None:
    """The IP address of a pynng ``SockAddr`` (None when it is not an IP peer).

    Built from the raw bytes, not ``str(remote)``: that calls ``socket.inet_ntop``,
    which PySyncObj replaces process-wide with a Windows-only function.
    """
    family = remote.family_as_str
    if family == "inet":
        return str(ipaddress.IPv4Address(struct.pack("I", remote.addr)))
    if family == "inetv6":
        return str(ipaddress.IPv6Address(bytes(remote.addr)))
    return None
