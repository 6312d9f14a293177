"""The shard's half of the path: forward closed report buckets, follow the hub's releases.

``ShardForwarder.forward(close_open)`` runs on the shard leader (on its interval,
or on demand): it takes each closed bucket (``take_batch``: reports of at least k
devices, shuffled, no identities), sends it to the region's aggregator as
``ShardBatch`` parts, and releases the bucket (``release_batch``, replicated) only
once every part was acknowledged as stored. A crash or a leader change in between
sends the bucket again; its parts carry the same content-addressed ids, so the
aggregator stores them once.

``ReleaseFollower`` applies the hub's ``GlobalUpdate`` parts to the shard
(``set_global_update``): those broadcast over Pub/Sub as they come, and, on an
interval, whatever newer release the hub has (catch-up by version, part by part),
so a shard that missed a broadcast, or was down, converges.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from omega.protocol import BatchAck, GlobalUpdate, ShardBatch, UpdateRequest
from omega.shard.state import ReportBatch

from .batches import UnexpectedReply, batch_id, split_parts

log = logging.getLogger("omega.federation.forward")


class ShardPort(Protocol):
    """What the forwarder needs of ``omega.shard.ShardService``."""

    def is_leader(self) -> bool: ...

    def take_batch(self, min_devices: int | None = None) -> ReportBatch | None: ...

    def release_batch(self, bucket: int) -> Any: ...

    def close_open_bucket(self, min_devices: int | None = None) -> Any: ...

    def set_global_update(self, update: GlobalUpdate, timeout_s: float | None = None
                          ) -> tuple[str, int]: ...

    def release_versions(self) -> tuple[int, int]: ...


#: ``send(ShardBatch) -> BatchAck`` (raises on any failure).
SendBatch = Callable[[ShardBatch], BatchAck]
#: ``fetch(UpdateRequest) -> GlobalUpdate`` (raises on any failure).
FetchUpdate = Callable[[UpdateRequest], GlobalUpdate]


@dataclass(frozen=True)
class ForwardResult:
    batches: int = 0
    parts: int = 0
    reports: int = 0
    skipped: str = ""


class ShardForwarder:
    """Closed buckets → aggregator, released only after every part is acked."""

    def __init__(self, shard: ShardPort, send: SendBatch, *, max_batches: int = 100) -> None:
        self._shard = shard
        self._send = send
        self._max = max_batches
        self._lock = threading.Lock()
        self.forwarded_batches = 0
        self.forwarded_reports = 0
        self.failures = 0

    def forward(self, close_open: bool = False) -> ForwardResult:
        """Forward every closed bucket (at most ``max_batches``). ``close_open``: close
        the open bucket first when k devices fed it (a forward on demand)."""
        with self._lock:  # one forward at a time: interval and trigger may race
            if not self._shard.is_leader():
                return ForwardResult(skipped="not leader")
            if close_open:
                self._shard.close_open_bucket()
            batches = parts = reports = 0
            for _ in range(self._max):
                batch = self._shard.take_batch()
                if batch is None:
                    break
                parts += self._send_bucket(batch)
                self._shard.release_batch(batch.bucket)
                batches += 1
                reports += len(batch.reports)
                self.forwarded_batches += 1
                self.forwarded_reports += len(batch.reports)
            return ForwardResult(batches, parts, reports)

    def _send_bucket(self, batch: ReportBatch) -> int:
        chunks = split_parts(batch.reports)
        bid = batch_id(batch.reports)
        rng = secrets.SystemRandom()
        for i, chunk in enumerate(chunks):
            wire = list(chunk)
            rng.shuffle(wire)  # the id hashes the sorted reports; the wire order is random
            ack = self._send(ShardBatch(bid, tuple(wire), i, len(chunks)))
            if ack.batch_id != bid or ack.part != i:
                raise UnexpectedReply(f"ack for {ack.batch_id}/{ack.part}, sent {bid}/{i}")
        return len(chunks)


class ReleaseFollower:
    """Applies the hub's releases on the shard leader: broadcasts and catch-up."""

    def __init__(self, shard: ShardPort, fetch: FetchUpdate | None) -> None:
        self._shard = shard
        self._fetch = fetch
        self._lock = threading.Lock()
        self.broadcasts_applied = 0
        self.catchups = 0

    def on_broadcast(self, update: GlobalUpdate) -> str:
        """One broadcast part: applied on the leader, ignored elsewhere (the leader
        replicates it to its followers)."""
        with self._lock:
            if not self._shard.is_leader():
                return "not_leader"
            status, _ = self._shard.set_global_update(update)
            if status == "applied":
                self.broadcasts_applied += 1
            return status

    def catch_up(self, max_parts: int = 10_000) -> int:
        """Fetch and apply the hub's newest release if it is newer than the newest one
        this shard holds completely; the version applied, or 0."""
        if self._fetch is None:
            return 0
        with self._lock:
            if not self._shard.is_leader():
                return 0
            _, done = self._shard.release_versions()
            first = self._fetch(UpdateRequest(done, 0))
            if first.version <= done:
                return 0
            self._shard.set_global_update(first)
            for part in range(1, min(first.parts, max_parts)):
                upd = self._fetch(UpdateRequest(done, part))
                if upd.version != first.version:
                    return 0  # a newer release came out meanwhile: next round gets it
                self._shard.set_global_update(upd)
            self.catchups += 1
            return first.version
