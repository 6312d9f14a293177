"""Shard settings: the ``[shard]`` table of ``config/shard.toml``.

Secrets (fleet key, dedup secret, Raft password) are not here: ``[secrets]`` of the
node config names where they come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from omega.schema import require

if TYPE_CHECKING:
    from omega.federation.settings import ShardFederationSettings
    from omega.raft.settings import RaftSettings

_SCHEMES = ("tcp://", "ipc://", "tls+tcp://", "inproc://")


def _raft() -> RaftSettings:
    from omega.raft.settings import RaftSettings

    return RaftSettings()


def _federation() -> ShardFederationSettings:
    from omega.federation.settings import ShardFederationSettings

    return ShardFederationSettings()


@dataclass(frozen=True)
class ShardSettings:
    """Device-facing sync service of one shard replica."""

    raft: RaftSettings = field(default_factory=_raft)
    #: ``[shard.federation]``: forwarding to the aggregator, following the hub.
    federation: ShardFederationSettings = field(default_factory=_federation)

    # -- addresses ---------------------------------------------------------------
    #: Address devices should dial for this node (sent in ``not_leader`` replies).
    #: Empty: the node's ``[node] listen``. The leader replicates it, so followers
    #: can name the leader's device-facing address.
    advertise: str = ""
    #: Optional static map from a Raft partner address to its device-facing address,
    #: as ``"host:port=tcp://host:port"`` entries; wins over replicated advertisements.
    peer_addresses: tuple[str, ...] = ()

    # -- validation --------------------------------------------------------------
    #: One push per device per interval (0: no limit, for tests and benchmarks).
    rate_limit_interval_s: float = 60.0
    #: A request's timestamp may differ from the shard's wall clock by this much.
    timestamp_window_s: float = 300.0
    #: Sealed reports per push, and bytes per sealed report.
    max_reports: int = 8
    max_report_bytes: int = 768
    #: "open": any well-formed device id whose signature verifies (its key derives
    #: from the fleet key) and that is not revoked; "registered": only device ids
    #: provisioned in the replicated registry.
    registration: Literal["open", "registered"] = "open"

    # -- group commit ------------------------------------------------------------
    #: While a batch is being committed, the next one waits at most this long after
    #: its oldest push for more (an idle group proposes a push at once).
    group_commit_max_delay_ms: float = 5.0
    #: Pushes per Raft entry at most.
    group_commit_max_batch: int = 256
    #: Batches being committed at once (the next is collected while one commits).
    group_commit_pipeline: int = 2
    #: A push not acknowledged within this time answers ``unavailable`` (retry).
    push_timeout_s: float = 3.0

    # -- storage and forwarding --------------------------------------------------
    #: k: a report bucket is closed (forwardable) once this many distinct devices fed it.
    k_anonymity: int = 50
    #: Back-pressure: refuse pushes (``unavailable``) when this many reports wait.
    max_stored_reports: int = 5_000_000

    # -- pulls and heartbeats ----------------------------------------------------
    #: Per-device limit on reads served by this replica: one per interval, with burst.
    pull_interval_s: float = 1.0
    pull_burst: int = 10
    #: Records (titles, regions, new content) in one PullResp; the device pulls again
    #: with ``more`` set.
    pull_max_records: int = 256
    #: Payload bytes in one PullResp (the protocol's typical size is about 5 KB).
    pull_max_bytes: int = 4500
    #: How often the leader checks that its advertisement is replicated.
    advertise_check_s: float = 0.5

    def __post_init__(self) -> None:
        require(self.advertise == "" or self.advertise.startswith(_SCHEMES), "advertise",
                f"must be empty or start with one of {', '.join(_SCHEMES)}")
        for i, entry in enumerate(self.peer_addresses):
            raft_addr, sep, device = entry.partition("=")
            require(bool(sep) and bool(raft_addr) and device.startswith(_SCHEMES),
                    f"peer_addresses[{i}]", "must be 'raft_host:port=tcp://host:port'")
        require(0 <= self.rate_limit_interval_s <= 86_400, "rate_limit_interval_s",
                "must be between 0 and 86400 s")
        require(1 <= self.timestamp_window_s <= 86_400, "timestamp_window_s",
                "must be between 1 and 86400 s")
        require(0 <= self.max_reports <= 64, "max_reports", "must be between 0 and 64")
        require(16 <= self.max_report_bytes <= 16_384, "max_report_bytes",
                "must be between 16 and 16384")
        require(0 <= self.group_commit_max_delay_ms <= 1000, "group_commit_max_delay_ms",
                "must be between 0 and 1000 ms")
        require(1 <= self.group_commit_max_batch <= 10_000, "group_commit_max_batch",
                "must be between 1 and 10000")
        require(1 <= self.group_commit_pipeline <= 16, "group_commit_pipeline",
                "must be between 1 and 16")
        require(0.05 <= self.push_timeout_s <= 120, "push_timeout_s",
                "must be between 0.05 and 120 s")
        require(1 <= self.k_anonymity <= 1_000_000, "k_anonymity", "must be between 1 and 1e6")
        require(self.max_stored_reports >= 1, "max_stored_reports", "must be at least 1")
        require(0 <= self.pull_interval_s <= 3600, "pull_interval_s",
                "must be between 0 and 3600 s")
        require(1 <= self.pull_burst <= 1000, "pull_burst", "must be between 1 and 1000")
        require(1 <= self.pull_max_records <= 10_000, "pull_max_records",
                "must be between 1 and 10000")
        require(256 <= self.pull_max_bytes <= 48 * 1024, "pull_max_bytes",
                "must be between 256 and 49152 bytes (a PullResp is at most 64 KiB)")
        require(0.05 <= self.advertise_check_s <= 60, "advertise_check_s",
                "must be between 0.05 and 60 s")

    def peer_map(self) -> dict[str, str]:
        """``peer_addresses`` as a dict: Raft address → device-facing address."""
        return {a: d for a, _, d in (e.partition("=") for e in self.peer_addresses)}
