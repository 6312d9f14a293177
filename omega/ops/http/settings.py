"""``[admin]``: where a server node's admin REST API listens and what it shows.

The tokens are secrets and live in ``[secrets]`` (``read_token``, ``operator_token``,
``admin_token``), never here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from omega import netcheck
from omega.schema import require

LOOPBACK = "127.0.0.1"


def split_host_port(value: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) → (host, port); ValueError if malformed."""
    hp = None if "://" in value else netcheck.split_host_port(value)
    if hp is None or not value.rpartition(":")[0]:
        raise ValueError(f"expected host:port, got {value!r}")
    if not 0 <= hp[1] <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return hp


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AdminSettings:
    """The admin API (HTTP) and the metrics of a shard, aggregator or hub."""

    #: ``host:port`` of the admin API, ``/metrics`` and the dashboard; empty: no
    #: HTTP server at all. Keep it on loopback (or a management network): the
    #: device-facing port is ``[node] listen``.
    listen: str = ""
    #: Prometheus metrics. Off: ``/metrics`` answers 404 and nothing is timed on
    #: the request path (benchmarks compare the two).
    metrics: bool = True
    #: This node's region, as the API and the dashboard show it.
    region: str = "local"
    #: Admin API base URLs of the shard replicas this node watches (the hub's
    #: dashboard and ``/api/v1/shards``), e.g. ``["http://127.0.0.1:7510"]``;
    #: polled with the node's own read token.
    shards: tuple[str, ...] = ()
    #: How often watched shards are polled and rates are sampled.
    poll_s: float = 1.0
    #: A device counts as active when it pushed within this window.
    active_window_s: float = 3600.0
    #: Write endpoints: on average one request per ``60 / write_per_min`` seconds per
    #: caller, ``write_burst`` at once; more answer 429 with Retry-After.
    write_per_min: float = 30.0
    write_burst: int = 5

    def __post_init__(self) -> None:
        if self.listen:
            try:
                split_host_port(self.listen)
            except ValueError as exc:
                require(False, "listen", f"{exc} (e.g. \"127.0.0.1:7510\"; empty disables)")
        require(0 < len(self.region) <= 64, "region", "must be 1-64 characters")
        for i, url in enumerate(self.shards):
            parts = urlsplit(url)
            require(parts.scheme in ("http", "https") and bool(parts.netloc), f"shards[{i}]",
                    f"must be an http(s) base URL such as http://127.0.0.1:7510, got {url!r}")
        require(0.1 <= self.poll_s <= 300, "poll_s", "must be between 0.1 and 300 seconds")
        require(1 <= self.active_window_s <= 30 * 86_400, "active_window_s",
                "must be between 1 second and 30 days")
        require(0 < self.write_per_min <= 100_000, "write_per_min",
                "must be above 0 and at most 100000")
        require(1 <= self.write_burst <= 1000, "write_burst", "must be between 1 and 1000")

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)
