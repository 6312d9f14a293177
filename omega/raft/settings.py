"""Raft settings: the ``[raft]`` table of a shard's (or hub's) config.

Loaded by ``omega.schema.load``; ranges are checked here so that a bad value is a
``SettingError`` naming the key before any port is bound. The cluster password is
not a setting: it is a secret, passed to ``ReplicatedLmdb`` by the composition root.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from omega.schema import require

_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``; raises ``ValueError`` if malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{address!r} is not 'host:port'")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port must be in 1..65535")
    return host, port


#: The cluster password's floor: its length and the distinct byte values in it.
MIN_PASSWORD_BYTES = 16
MIN_PASSWORD_DISTINCT = 8


def password_weakness(password: bytes) -> str | None:
    """Why ``password`` is too weak for the Raft port, or None.

    A rule, not an entropy meter: at least 16 bytes, at least 8 different byte
    values (refuses a repeated letter or a short pattern repeated). Generate one
    with ``openssl rand -base64 24``.
    """
    if len(password) < MIN_PASSWORD_BYTES:
        return f"the cluster password must be at least {MIN_PASSWORD_BYTES} bytes"
    if len(set(password)) < MIN_PASSWORD_DISTINCT:
        return (f"the cluster password has {len(set(password))} distinct characters, fewer "
                f"than {MIN_PASSWORD_DISTINCT}: use a random one (openssl rand -base64 24)")
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_raft_address(key: str, address: str) -> None:
    """A Raft ``host:port`` that names an interface (not a wildcard: the port binds to it)."""
    try:
        host, _ = split_address(address)
    except ValueError as exc:
        require(False, key, str(exc))
        return
    require(host not in _WILDCARDS, key,
            "must name the cluster interface, not a wildcard: the Raft port binds to it")


@dataclass(frozen=True)
class RaftSettings:
    """One replica of a Raft group (PySyncObj) over a local LMDB state machine."""

    #: This replica's Raft address, ``host:port`` on the cluster network. The port
    #: binds to this host only (never 0.0.0.0). Partners must list it the same way.
    self_address: str = "127.0.0.1:7100"
    #: The other replicas' Raft addresses (a group of 3: two partners).
    partners: tuple[str, ...] = ()

    # -- timing ------------------------------------------------------------------
    #: A follower that hears no leader for a random time in [min, max] starts an
    #: election. 0.1–0.3 s elects a new leader well within 1 s of a crash.
    election_timeout_min_s: float = 0.1
    election_timeout_max_s: float = 0.3
    #: Leader heartbeat period; must be under a third of election_timeout_min_s.
    heartbeat_s: float = 0.03
    #: A leader that hears from no majority for this long steps down (a leader cut
    #: off from its group stops accepting writes within this time).
    leader_fallback_timeout_s: float = 1.5
    #: A connection that carried nothing for this long is dropped (>= election max).
    connection_timeout_s: float = 3.5
    #: Interval between reconnection attempts to an unreachable partner.
    connection_retry_s: float = 0.5
    #: A new connection to the Raft port that has not sent a frame that decrypts
    #: (with the group's password) within this time is dropped.
    auth_timeout_s: float = 2.0
    #: Incoming connections waiting to authenticate at most; beyond, a new one is
    #: refused at once (an authenticated partner's link is never counted).
    max_unauthenticated: int = 16

    # -- log and snapshots ---------------------------------------------------------
    #: Compact the log (snapshot the LMDB state) when it holds more entries than
    #: this, or when this many seconds passed since the last compaction.
    log_compaction_min_entries: int = 5000
    log_compaction_min_time_s: float = 300.0
    #: Bytes of a snapshot sent to a lagging follower per message.
    snapshot_chunk_bytes: int = 1024 * 1024
    #: Largest command ``submit`` accepts (the shard's group commit stays below).
    max_command_bytes: int = 1024 * 1024
    #: Commands waiting for the Raft thread at most (beyond: ``QueueFull``).
    commands_queue_size: int = 10000

    # -- storage -------------------------------------------------------------------
    #: LMDB map size: address space reserved for the state (not disk used).
    map_size: int = 1 << 30
    #: fsync LMDB on every applied entry (about 6 ms each here). Off: LMDB flushes
    #: once a second and on snapshots, and after a power loss the entries it missed
    #: are applied again from the journal (see docs/raft.md).
    fsync_commits: bool = False
    #: Sync the Raft journal (and the term and vote) before any message leaves the
    #: replica, as Raft requires: then a power loss of every replica at once loses
    #: no acknowledged entry. Off: faster, and only a process crash is survived.
    fsync_journal: bool = True

    #: Allow running without a cluster password, on a loopback address only.
    dev_mode: bool = False

    def __post_init__(self) -> None:
        _check_raft_address("self_address", self.self_address)
        for i, partner in enumerate(self.partners):
            _check_raft_address(f"partners[{i}]", partner)
        require(self.self_address not in self.partners, "partners",
                "must not contain self_address")
        require(len(set(self.partners)) == len(self.partners), "partners",
                "must not repeat an address")
        require(0.01 <= self.election_timeout_min_s <= 60.0, "election_timeout_min_s",
                "must be in [0.01, 60] seconds")
        require(self.election_timeout_max_s > self.election_timeout_min_s,
                "election_timeout_max_s", "must be greater than election_timeout_min_s")
        require(self.election_timeout_max_s <= 120.0, "election_timeout_max_s",
                "must be at most 120 seconds")
        require(0.001 <= self.heartbeat_s < self.election_timeout_min_s / 3, "heartbeat_s",
                "must be at least 0.001 s and under a third of election_timeout_min_s")
        require(self.leader_fallback_timeout_s > self.heartbeat_s,
                "leader_fallback_timeout_s", "must be greater than heartbeat_s")
        require(self.connection_timeout_s >= self.election_timeout_max_s,
                "connection_timeout_s", "must be at least election_timeout_max_s")
        require(0.0 < self.connection_retry_s <= 60.0, "connection_retry_s",
                "must be in (0, 60] seconds")
        require(0.05 <= self.auth_timeout_s <= 60.0, "auth_timeout_s",
                "must be in [0.05, 60] seconds")
        require(1 <= self.max_unauthenticated <= 4096, "max_unauthenticated",
                "must be in [1, 4096]")
        require(not self.dev_mode or is_loopback(self.self_host), "dev_mode",
                f"runs the Raft port without a password, so it is allowed on a loopback "
                f"self_address only, not {self.self_address}: give the cluster password "
                f"([secrets] raft_password) and set dev_mode = false")
        require(self.log_compaction_min_entries >= 2, "log_compaction_min_entries",
                "must be at least 2")
        require(self.log_compaction_min_time_s > 0, "log_compaction_min_time_s",
                "must be positive")
        require(4096 <= self.snapshot_chunk_bytes <= 64 * 1024 * 1024, "snapshot_chunk_bytes",
                "must be in [4 KiB, 64 MiB]")
        require(1024 <= self.max_command_bytes <= 64 * 1024 * 1024, "max_command_bytes",
                "must be in [1 KiB, 64 MiB]")
        require(1 <= self.commands_queue_size <= 10_000_000, "commands_queue_size",
                "must be in [1, 10000000]")
        require(self.map_size >= 1 << 20, "map_size", "must be at least 1 MiB")

    @property
    def self_host(self) -> str:
        return split_address(self.self_address)[0]
