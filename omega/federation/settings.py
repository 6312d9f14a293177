"""Settings of the federation path: ``[shard.federation]``, ``[aggregator]``, ``[hub]``.

Intervals: a shard forwards about every minute, an aggregator mixes about every 5
minutes (DESIGN.md §7), the hub releases every 6 hours — not every 15 minutes: ε adds
up with every release (one TV's ε a day at ε = 1 a release: 2.1 at 4 releases, 13.2
at 96), and a TV pulls the crowd's lists every 6 h anyway (``[sync] crowd_refresh_s``).
Every stage also runs on demand (``omega-node ctl ... federation trigger``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from omega.schema import require

if TYPE_CHECKING:
    from omega.brain.embedder import EmbedderSettings
    from omega.federation.release import ReleaseSettings
    from omega.raft.settings import RaftSettings

_SCHEMES = ("tcp://", "ipc://", "tls+tcp://", "inproc://")


def _addresses(values: tuple[str, ...], key: str) -> None:
    for i, v in enumerate(values):
        require(v.startswith(_SCHEMES), f"{key}[{i}]",
                f"must start with one of {', '.join(_SCHEMES)}, got {v!r}")


def _label(value: str, key: str) -> None:
    ok = 0 < len(value) <= 32 and all(c.isascii() and (c.isalnum() or c in "._:-") for c in value)
    require(ok, key, "must be 1-32 ASCII letters, digits or . _ : -")


@dataclass(frozen=True)
class ShardFederationSettings:
    """``[shard.federation]``: where the shard leader forwards and whom it follows."""

    #: The region's aggregator(s), tried in order. Empty: reports are kept, not forwarded.
    aggregator: tuple[str, ...] = ()
    #: The hub replicas' request addresses (catch-up by version). Empty: no catch-up.
    hub: tuple[str, ...] = ()
    #: The hub replicas' Pub/Sub addresses (releases as they are made).
    hub_publish: tuple[str, ...] = ()
    #: How often the leader forwards closed buckets.
    forward_interval_s: float = 60.0
    #: How often the leader asks the hub for a release newer than it holds.
    catch_up_interval_s: float = 30.0
    #: Per request to the aggregator or the hub.
    request_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _addresses(self.aggregator, "aggregator")
        _addresses(self.hub, "hub")
        _addresses(self.hub_publish, "hub_publish")
        require(0.05 <= self.forward_interval_s <= 86_400, "forward_interval_s",
                "must be between 0.05 s and a day")
        require(0.05 <= self.catch_up_interval_s <= 86_400, "catch_up_interval_s",
                "must be between 0.05 s and a day")
        require(0.1 <= self.request_timeout_s <= 120, "request_timeout_s",
                "must be between 0.1 and 120 s")


@dataclass(frozen=True)
class AggregatorSettings:
    """``[aggregator]``: the regional shuffler."""

    #: The region label the hub sees (scopes trends); nothing else names the origin.
    region: str = "local"
    #: The hub replicas' request addresses, tried in order (the leader is followed).
    hub: tuple[str, ...] = ()
    #: How often the aggregator looks whether to mix and forward.
    interval_s: float = 300.0
    #: Mix once this many batch parts are held (reports of many shards together)...
    min_batches: int = 2
    #: ...or once the oldest held part waited this long.
    max_wait_s: float = 900.0
    #: Back-pressure: refuse batches (``unavailable``) when this many reports are held.
    max_held_reports: int = 5_000_000
    #: Received batch ids are remembered this long (a shard resends within minutes).
    retention_s: float = 7 * 86_400.0
    #: LMDB map size of the shuffle store.
    map_size: int = 1 << 30
    #: Per request to the hub.
    request_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _label(self.region, "region")
        _addresses(self.hub, "hub")
        require(0.05 <= self.interval_s <= 86_400, "interval_s", "must be between 0.05 s and a day")
        require(1 <= self.min_batches <= 100_000, "min_batches", "must be between 1 and 100000")
        require(0 <= self.max_wait_s <= 7 * 86_400, "max_wait_s", "must be between 0 and a week")
        require(self.max_held_reports >= 1, "max_held_reports", "must be at least 1")
        require(3600 <= self.retention_s <= 365 * 86_400, "retention_s",
                "must be between an hour and a year")
        require(self.map_size >= 1 << 20, "map_size", "must be at least 1 MiB")
        require(0.1 <= self.request_timeout_s <= 120, "request_timeout_s",
                "must be between 0.1 and 120 s")


def _raft() -> RaftSettings:
    from omega.raft.settings import RaftSettings

    # Slower than a shard's: the hub's writes are a few batches a minute, and its
    # leader does CPU-heavy work (opening reports, embedding titles, the release)
    # that must not cost it its leadership on a busy machine.
    # A release is one command (its lists, zstd): room for ~100,000 titles' top-20.
    return RaftSettings(self_address="127.0.0.1:7450", election_timeout_min_s=1.0,
                        election_timeout_max_s=2.0, heartbeat_s=0.2,
                        leader_fallback_timeout_s=6.0, connection_timeout_s=8.0,
                        max_command_bytes=32 * 1024 * 1024)


def _embedder() -> EmbedderSettings:
    from omega.brain.embedder import EmbedderSettings

    return EmbedderSettings()


def _release() -> ReleaseSettings:
    from omega.federation.release import ReleaseSettings

    return ReleaseSettings()


@dataclass(frozen=True)
class HubSettings:
    """``[hub]``: one replica of the hub's Raft group."""

    raft: RaftSettings = field(default_factory=_raft)
    #: ``[hub.release]``: ε and δ per release, thresholds, top-k (``ReleaseSettings``).
    release: ReleaseSettings = field(default_factory=_release)
    #: Pub/Sub address this replica broadcasts releases on (shards subscribe to each
    #: replica's). Empty: no broadcast (shards catch up by version only).
    publish: str = ""
    #: Static map from a replica's Raft address to its request address
    #: (``"host:port=tcp://host:port"``): whom a follower names in ``not_leader``.
    peer_addresses: tuple[str, ...] = ()
    #: How often the leader makes a release (DP noise, thresholds, neighbour lists):
    #: every release spends ε, and TVs pull every 6 h (docs/federation-path.md).
    release_interval_s: float = 21_600.0
    #: Reports sealed to a retired key still open for this long after a rotation.
    key_grace_s: float = 7 * 86_400.0
    #: Received batch ids are remembered this long.
    retention_s: float = 7 * 86_400.0
    #: Threads that open the reports of one received part (libsodium releases the GIL,
    #: so opening — the leader's bound — scales with cores). 0: one per CPU.
    open_threads: int = 0
    #: ``[hub.embedder]``: the TV's embedder, for titles added without an embedding
    #: (loaded on first use).
    embedder: EmbedderSettings = field(default_factory=_embedder)

    def __post_init__(self) -> None:
        require(self.publish == "" or self.publish.startswith(_SCHEMES), "publish",
                f"must be empty or start with one of {', '.join(_SCHEMES)}")
        for i, entry in enumerate(self.peer_addresses):
            raft_addr, sep, device = entry.partition("=")
            require(bool(sep) and bool(raft_addr) and device.startswith(_SCHEMES),
                    f"peer_addresses[{i}]", "must be 'raft_host:port=tcp://host:port'")
        require(0.05 <= self.release_interval_s <= 30 * 86_400, "release_interval_s",
                "must be between 0.05 s and 30 days")
        require(0 <= self.key_grace_s <= 365 * 86_400, "key_grace_s",
                "must be between 0 and a year")
        require(3600 <= self.retention_s <= 365 * 86_400, "retention_s",
                "must be between an hour and a year")
        require(0 <= self.open_threads <= 256, "open_threads",
                "must be between 0 (one per CPU) and 256")

    def peer_map(self) -> dict[str, str]:
        return {a: d for a, _, d in (e.partition("=") for e in self.peer_addresses)}
