"""``DeviceClient``: how a TV talks to its shard (push, pull, heartbeat).

Every request is signed with the device key and carries a fresh timestamp. The
client follows ``not_leader`` replies to the leader's address (or to the next
endpoint when no leader is named), retries transient failures (no connection,
timeout, leader change, ``unavailable``) a bounded number of times within a
deadline, and raises the protocol's typed errors for everything else:
``RateLimited`` (with ``retry_after_s``), ``Unauthorized`` (``Stale``, ``Replay``),
``BadRequest``, and ``Unavailable`` when it gave up.

Pushes are idempotent: a push keeps its sequence number through every retry, and
also across calls — calling ``push`` again with the same reports after a failure
reuses the unacknowledged sequence number, so the shard applies it at most once.
Sequence numbers only grow: they start from the wall clock in microseconds and,
with ``state_path``, are persisted (atomically, before use) so that they survive
restarts even if the clock steps back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omega.errors import ProtocolError, TransportError
from omega.protocol import (
    BadRequest,
    ErrorReply,
    Heartbeat,
    HeartbeatAck,
    Message,
    NotLeaderError,
    Pull,
    PullResp,
    Push,
    PushAck,
    RateLimited,
    Replay,
    Stale,
    Unauthorized,
    Unavailable,
    decode,
    encode,
    sign,
)
from omega.schema import require
from omega.transport import Requester, RpcClient, TransportSettings

__all__ = [
    "BadRequest",
    "ClientSettings",
    "DeviceClient",
    "NotLeaderError",
    "RateLimited",
    "Replay",
    "Stale",
    "Unauthorized",
    "Unavailable",
]

log = logging.getLogger("omega.client")

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class ClientSettings:
    """Retries and deadlines of a device's requests."""

    #: Deadline of one request attempt.
    request_timeout_s: float = 2.0
    #: How long an attempt waits for a connection to its endpoint (a replica that is
    #: down costs this much before the next one is tried).
    connect_timeout_s: float = 0.5
    #: Attempts per call, counting redirects to the leader.
    attempts: int = 6
    #: Deadline of a whole call, all attempts included.
    call_timeout_s: float = 10.0
    #: Backoff before retrying a transient failure; doubles per retry, with jitter.
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0
    #: A ``rate_limited`` reply asking to wait at most this long is waited out and
    #: retried; a longer one is raised to the caller.
    wait_rate_limit_max_s: float = 0.0

    def __post_init__(self) -> None:
        require(0.01 <= self.request_timeout_s <= 600, "request_timeout_s",
                "must be between 0.01 and 600 s")
        require(0.01 <= self.connect_timeout_s <= self.request_timeout_s, "connect_timeout_s",
                "must be between 0.01 s and request_timeout_s")
        require(1 <= self.attempts <= 100, "attempts", "must be between 1 and 100")
        require(self.request_timeout_s <= self.call_timeout_s <= 3600, "call_timeout_s",
                "must be at least request_timeout_s and at most 3600 s")
        require(0 <= self.backoff_s <= self.backoff_max_s <= 60, "backoff_s",
                "0 <= backoff_s <= backoff_max_s <= 60 required")
        require(0 <= self.wait_rate_limit_max_s <= 3600, "wait_rate_limit_max_s",
                "must be between 0 and 3600 s")


class _SeqState:
    """The device's sequence counter and its unacknowledged push, maybe on disk."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.last = 0
        self.pending: tuple[int, str] | None = None  # (seq, digest of its reports)
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self.last = int(data["last_seq"])
                p = data.get("pending")
                self.pending = (int(p[0]), str(p[1])) if p else None
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                raise BadRequest(f"unreadable client state {path}: {exc}") from None

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = {"last_seq": self.last, "pending": list(self.pending) if self.pending else None}
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class DeviceClient:
    """A TV's connection to its shard's replicas. Thread-safe; one call at a time.

    ``endpoints``: the device-facing addresses of the shard's replicas.
    ``requester``: share one transport among many clients (simulators); by default
    the client opens its own ``RpcClient`` (with its own retries off: this class
    retries, re-signing each attempt with a fresh timestamp).
    """

    def __init__(self, endpoints: str | Sequence[str], device_id: str, device_key: bytes,
                 settings: ClientSettings | None = None, *, state_path: Path | None = None,
                 requester: Requester | None = None,
                 transport: TransportSettings | None = None,
                 wall: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None,
                 rng: Callable[[], float] | None = None) -> None:
        self.endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        if not self.endpoints and requester is None:
            raise ValueError("DeviceClient needs at least one endpoint")
        self.device_id = device_id
        self._key = device_key
        self.settings = settings or ClientSettings()
        self._wall = wall
        self._clock = clock
        self._stopped = threading.Event()
        self._sleep = sleep or self._stopped.wait
        self._rng = rng or (lambda: int.from_bytes(os.urandom(2), "big") / 65535)
        self._owns_rpc = requester is None
        if requester is None:
            base = transport or TransportSettings()
            requester = RpcClient(self.endpoints, TransportSettings(
                workers=base.workers, recv_max_size=base.recv_max_size,
                request_timeout_s=self.settings.request_timeout_s, retries=0,
                send_timeout_s=self.settings.connect_timeout_s,
                reconnect_min_ms=base.reconnect_min_ms, reconnect_max_ms=base.reconnect_max_ms,
                close_timeout_s=base.close_timeout_s, tls=base.tls), name=f"device-{device_id}")
        self._rpc = requester
        self._seq = _SeqState(state_path)
        self._lock = threading.Lock()
        self.counts = {"attempts": 0, "redirects": 0, "retries": 0}

    # -- public ---------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._seq.last

    def push(self, reports: Sequence[bytes]) -> PushAck:
        """Send sealed reports; returns the ack once the shard committed them."""
        reports = tuple(reports)
        digest = _digest(reports)
        with self._lock:
            pending = self._seq.pending
            if pending is not None and pending[1] == digest:
                seq = pending[0]  # the same push again: same sequence number
            else:
                seq = max(self._seq.last + 1, int(self._wall() * 1_000_000))
                self._seq.last = seq
                self._seq.pending = (seq, digest)
                self._seq.save()  # before it leaves: a restart never reuses it
            ack = self._call(
                lambda ts: Push(self.device_id, seq, ts, reports), PushAck)
            if ack.seq != seq:
                raise BadRequest(f"shard acknowledged sequence {ack.seq}, sent {seq}")
            self._seq.pending = None
            self._seq.save()
            return ack

    def push_seq(self, seq: int, reports: Sequence[bytes]) -> PushAck:
        """Send sealed reports under a sequence number the caller keeps durably.

        For callers that store the pending push with their own state (the TV's sync
        agent keeps it in the brain's LMDB next to the outbound queue): a retry after a
        crash sends the same ``seq`` with the same reports, which the shard applies once.
        The caller's ``seq`` must grow between distinct pushes.
        """
        reports = tuple(reports)
        with self._lock:
            self._seq.last = max(self._seq.last, seq)
            ack = self._call(lambda ts: Push(self.device_id, seq, ts, reports), PushAck)
            if ack.seq != seq:
                raise BadRequest(f"shard acknowledged sequence {ack.seq}, sent {seq}")
            return ack

    def pull(self, since_version: int, region: str, want: Sequence[str] = ()) -> PullResp:
        """What changed since ``since_version`` (served by any replica)."""
        with self._lock:
            seq = self._seq.last
            return self._call(
                lambda ts: Pull(self.device_id, seq, ts, since_version, region, tuple(want)),
                PullResp)

    def heartbeat(self, health: int = 0) -> HeartbeatAck:
        with self._lock:
            return self._call(lambda ts: Heartbeat(self.device_id, ts, health), HeartbeatAck)

    def close(self) -> None:
        self._stopped.set()
        if self._owns_rpc:
            self._rpc.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry loop ---------------------------------------------------------------

    def _call(self, build: Callable[[int], Any], expect: type[M]) -> M:
        s = self.settings
        deadline = self._clock() + s.call_timeout_s
        last: ProtocolError = Unavailable("no attempt made")
        transient = 0
        for attempt in range(s.attempts):
            left = deadline - self._clock()
            if left <= 0 or self._stopped.is_set():
                break
            self.counts["attempts"] += 1
            frame = encode(sign(build(int(self._wall() * 1000)), self._key))
            try:
                raw = self._rpc.request(frame, timeout_s=min(s.request_timeout_s, left))
            except TransportError as exc:
                last = Unavailable(f"no answer from the shard: {exc}")
                transient += 1
                self._pause(self._backoff(transient), deadline)
                continue
            try:
                reply = decode(raw, allowed=(expect, ErrorReply))
            except ProtocolError as exc:
                # Chained: a caller may tell an oversized reply from a malformed one.
                raise BadRequest(f"the shard sent an unreadable reply: {exc}") from exc
            if isinstance(reply, expect):
                return reply
            assert isinstance(reply, ErrorReply)
            err = reply.to_error()
            if isinstance(err, NotLeaderError):
                last = Unavailable(f"no leader reached: {err.message}")
                self.counts["redirects"] += 1
                self._redirect(err.leader)
                if attempt:  # a second redirect in a row: an election is under way
                    transient += 1
                    self._pause(self._backoff(transient), deadline)
                continue
            if isinstance(err, Unavailable):
                last = err
                transient += 1
                self.counts["retries"] += 1
                wait = err.retry_after_s if err.retry_after_s is not None else 0.0
                self._pause(max(wait, self._backoff(transient)), deadline)
                continue
            if isinstance(err, RateLimited) and (
                    err.retry_after_s is not None
                    and err.retry_after_s <= s.wait_rate_limit_max_s):
                last = err
                self._pause(err.retry_after_s, deadline)
                continue
            raise err
        raise last

    def _redirect(self, leader: str | None) -> None:
        prefer = getattr(self._rpc, "prefer", None)
        if prefer is None:
            return
        if leader:
            prefer(leader)
            return
        current = getattr(self._rpc, "current", None)
        if current in self.endpoints and len(self.endpoints) > 1:
            prefer(self.endpoints[(self.endpoints.index(current) + 1) % len(self.endpoints)])

    def _backoff(self, n: int) -> float:
        s = self.settings
        delay: float = min(s.backoff_max_s, s.backoff_s * (2.0 ** max(0, n - 1)))
        return delay * (0.5 + 0.5 * self._rng())

    def _pause(self, seconds: float, deadline: float) -> None:
        seconds = min(seconds, deadline - self._clock())
        if seconds > 0:
            self._sleep(seconds)


def _digest(reports: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for r in reports:
        h.update(len(r).to_bytes(4, "big") + r)
    return h.hexdigest()[:32]
