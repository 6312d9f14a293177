"""``SyncSettings``: the ``[sync]`` table of a TV — where its shard is, how often it
syncs, and what it may contribute (DESIGN.md §5, §7).

Shard groups are listed per region as ``[[sync.groups]]`` tables (a name, a region,
the group's replica endpoints); the TV picks its group by rendezvous hashing of its
device id among its region's groups (``omega.sync.shardmap``). The older single
``endpoints`` list still works: it is one group named ``default`` in the TV's region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from omega.schema import require

Tier = Literal["premium", "active", "casual"]

_LABEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_SCHEMES = ("tcp://", "ipc://", "tls+tcp://", "inproc://")


def _label(value: str, key: str, max_len: int = 32) -> None:
    require(0 < len(value) <= max_len and set(value) <= _LABEL_CHARS, key,
            f"must be 1-{max_len} characters of A-Z a-z 0-9 . _ : -, got {value!r}")


@dataclass(frozen=True)
class ShardGroup:
    """One shard group (a Raft group of replicas) serving a region."""

    name: str
    region: str
    endpoints: tuple[str, ...]

    def __post_init__(self) -> None:
        _label(self.name, "name")
        _label(self.region, "region")
        require(0 < len(self.endpoints) <= 16, "endpoints", "a group lists 1-16 replicas")
        for i, ep in enumerate(self.endpoints):
            require(ep.startswith(_SCHEMES), f"endpoints[{i}]",
                    f"must start with one of {', '.join(_SCHEMES)}, got {ep!r}")


@dataclass(frozen=True)
class SyncSettings:
    """How a TV syncs with the constellation."""

    #: The sync agent runs only when enabled (and a device key is configured).
    enabled: bool = False
    device_id: str = "tv-local"
    region: str = "local"
    #: One group named ``default`` in ``region`` (older configs); see ``groups``.
    endpoints: tuple[str, ...] = ()
    groups: tuple[ShardGroup, ...] = ()
    #: The seed's tiers: premium 1 min, active 5 min, casual 15 min.
    tier: Tier = "active"
    premium_s: float = 60.0
    active_s: float = 300.0
    casual_s: float = 900.0
    #: > 0: overrides the tier's interval (tests shorten it here).
    interval_s: float = 0.0
    #: Each interval is drawn uniformly from interval × [1 - jitter, 1 + jitter].
    jitter: float = 0.1
    heartbeat_s: float = 60.0
    #: Pull the crowd's lists at most this often (the first sync after a start, and
    #: every sync while a delta is unfinished, pull anyway). Every release changes
    #: almost every list (fresh noise) and a pull since the last one brings each
    #: changed record once, so how often a TV pulls, not how often the hub releases,
    #: sets its downlink: ~1 MB a pull at ml-latest-small's lists under a 1 M fleet's
    #: noise — 4 MB a day at 6 h, 96 MB at every 15-min release (bench/list_churn.py).
    #: 0: at every sync.
    crowd_refresh_s: float = 21_600.0
    #: Failures back off exponentially with full jitter: uniform(0, min(max, base·2^n)).
    backoff_base_s: float = 5.0
    backoff_max_s: float = 900.0
    #: Every push carries exactly this many reports (real ones, then dummies).
    reports_per_push: int = 8
    #: At most this many real co-view reports a (UTC) day.
    daily_budget: int = 24
    #: Views at most this many positions apart make a pair (BENCHMARKS.md §1).
    window: int = 3
    #: Randomized response: probability that a report's true pair is sent.
    keep: float = 0.5
    #: The shard forwards reports in shuffled batches from at least k devices (the
    #: shard's own ``k_anonymity``; the accountant's amplification uses it).
    k_anonymity: int = 50
    #: δ of the accountant's (ε, δ) figures.
    delta: float = 1e-6
    #: Real reports waiting at most (about a week of budget); beyond it none are built.
    max_queue: int = 500
    #: The hub's public key (hex, 32 bytes) and its id; pulls may bring newer ones.
    hub_key_id: int = 0
    hub_public_key: str = ""
    #: The hub's Ed25519 verify key (hex, 32 bytes): a newer key a pull announces is
    #: adopted only if the hub's signature over it verifies with this key. Empty (a
    #: TV provisioned before keys were signed): every rotation is refused and the TV
    #: keeps sealing to ``hub_public_key`` (docs/sync.md, "The hub's key").
    hub_verify_key: str = ""
    #: Pull requests per sync at most (a long delta comes in bounded pieces).
    pull_max_rounds: int = 64

    def __post_init__(self) -> None:
        require(0 < len(self.device_id) <= 31 and set(self.device_id) <= _LABEL_CHARS,
                "device_id", "must be 1-31 characters of A-Z a-z 0-9 . _ : -")
        _label(self.region, "region")
        for i, ep in enumerate(self.endpoints):
            require(ep.startswith(_SCHEMES), f"endpoints[{i}]",
                    f"must start with one of {', '.join(_SCHEMES)}, got {ep!r}")
        names = [g.name for g in self.groups]
        require(len(names) == len(set(names)), "groups", "group names must be unique")
        for key in ("premium_s", "active_s", "casual_s", "heartbeat_s"):
            require(0.05 <= getattr(self, key) <= 86_400, key, "must be between 0.05 s and a day")
        require(0 <= self.crowd_refresh_s <= 7 * 86_400, "crowd_refresh_s",
                "must be between 0 (every sync) and a week")
        require(self.interval_s == 0 or 0.05 <= self.interval_s <= 86_400, "interval_s",
                "0 (by tier) or between 0.05 s and a day")
        require(0 <= self.jitter < 1, "jitter", "must be in [0, 1)")
        require(0 < self.backoff_base_s <= self.backoff_max_s <= 86_400, "backoff_base_s",
                "0 < backoff_base_s <= backoff_max_s <= a day required")
        require(1 <= self.reports_per_push <= 8, "reports_per_push",
                "1-8 (a push carries at most 8 reports in 1 KB)")
        require(0 <= self.daily_budget <= 10_000, "daily_budget", "must be 0-10000")
        require(1 <= self.window <= 50, "window", "must be 1-50")
        require(0 <= self.keep < 1, "keep", "must be in [0, 1) (1 would send every pair as is)")
        require(2 <= self.k_anonymity <= 1_000_000, "k_anonymity", "must be 2-1000000")
        require(0 < self.delta < 0.01, "delta", "must be in (0, 0.01)")
        require(1 <= self.max_queue <= 100_000, "max_queue", "must be 1-100000")
        require(0 <= self.hub_key_id < 2**32, "hub_key_id", "must be 0 (none) or a u32")
        if self.hub_public_key:
            try:
                raw = bytes.fromhex(self.hub_public_key)
            except ValueError:
                raw = b""
            require(len(raw) == 32, "hub_public_key", "must be 64 hex digits (32 bytes)")
            require(self.hub_key_id > 0, "hub_key_id", "a hub public key needs its id (>= 1)")
        if self.hub_verify_key:
            try:
                vk = bytes.fromhex(self.hub_verify_key)
            except ValueError:
                vk = b""
            require(len(vk) == 32, "hub_verify_key", "must be 64 hex digits (32 bytes)")
        require(1 <= self.pull_max_rounds <= 1000, "pull_max_rounds", "must be 1-1000")

    @property
    def interval(self) -> float:
        """The sync interval before jitter."""
        if self.interval_s > 0:
            return self.interval_s
        return float({"premium": self.premium_s, "active": self.active_s,
                      "casual": self.casual_s}[self.tier])

    def all_groups(self) -> tuple[ShardGroup, ...]:
        """``groups`` plus the legacy ``endpoints`` as group ``default``."""
        if self.endpoints:
            return (*self.groups, ShardGroup("default", self.region, self.endpoints))
        return self.groups
