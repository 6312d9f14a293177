"""``ShardService``: the device-facing request handler of one shard replica.

``handle(frame) -> reply`` is called by the transport's worker threads, many at
once. Pushes are validated completely before anything is proposed (see
``validate``), then handed to the group committer, which puts many pushes in one
Raft entry. A push's reply is deferred: ``handle`` returns a ``Pending`` at once
(the worker goes on receiving) and the Raft thread resolves it — a ``PushAck``
only after the entry is committed and applied here, else a typed error. Pulls,
heartbeats and every refusal are answered at once. Pulls and heartbeats are
served from this replica's applied state, leader or follower. A follower answers
pushes with ``not_leader`` and the leader's device-facing address.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from omega import __version__
from omega.errors import ProtocolError, StoreError
from omega.protocol import (
    ErrorReply,
    GlobalUpdate,
    Health,
    HealthReply,
    Heartbeat,
    HeartbeatAck,
    Message,
    NotLeaderError,
    Pull,
    Push,
    PushAck,
    RateLimited,
    Replay,
    Unavailable,
    classify_sequence,
    decode,
    encode,
    verify,
)
from omega.raft import CommitTimeout, KvReader, LeaderChanged, NotLeader
from omega.reply import Pending, Reply
from omega.shard import state
from omega.shard.commands import (
    Advertise,
    CloseOpen,
    Command,
    PushBatch,
    PushEntry,
    Registry,
    ReleaseBatch,
    SetGlobal,
    encode_command,
)
from omega.shard.groupcommit import BatchExpired, DoneFn, GroupCommitter, Inflight, Ticket
from omega.shard.pulls import build_pull, records_of
from omega.shard.ratelimit import KeyedLimiter, push_retry_after
from omega.shard.settings import ShardSettings
from omega.shard.state import PushOutcome, ReportBatch
from omega.shard.validate import (
    DeviceKeys,
    check_push_shape,
    check_registry,
    device_hash,
    report_digest,
)

log = logging.getLogger("omega.shard")

_DEVICE_TYPES = (Push, Pull, Heartbeat, Health)
#: Encoded pull answers kept per replica (keyed by since, region, current cursor).
_PULL_CACHE = 256
#: How long a device should wait after a transient refusal (leader change, timeout).
_RETRY_SOON_S = 0.05


class ShardStore(Protocol):
    """What the service needs from ``omega.raft.ReplicatedLmdb``."""

    def submit(self, command: bytes, timeout_s: float) -> Any: ...

    def submit_async(self, command: bytes, timeout_s: float,
                     on_done: Callable[[Any, StoreError | None], None]) -> None: ...

    def add_tick_hook(self, hook: Callable[[], None]) -> None: ...

    def remove_tick_hook(self, hook: Callable[[], None]) -> None: ...

    def wake(self) -> None: ...

    def read(self) -> AbstractContextManager[KvReader]: ...

    def is_leader(self) -> bool: ...

    def leader(self) -> str | None: ...

    def status(self) -> dict[str, Any]: ...

    def state_hash(self) -> str: ...


class ShardService:
    """Push / Pull / Heartbeat / Health for one replica. Thread-safe.

    ``fleet_key`` derives device keys (``HMAC(fleet_key, device_id)``);
    ``dedup_secret`` keys the hashes that stand for devices in replicated state.
    ``advertise`` is this node's device-facing address (``settings.advertise`` wins
    when set); the leader replicates it so that followers can name it.
    """

    def __init__(self, settings: ShardSettings, store: ShardStore, fleet_key: bytes,
                 dedup_secret: bytes, wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic, *, advertise: str = "",
                 name: str = "shard") -> None:
        if len(fleet_key) < 16 or len(dedup_secret) < 16:
            raise ValueError("fleet_key and dedup_secret must be at least 16 bytes")
        self.settings = settings
        self._store = store
        self._fleet_key = fleet_key
        self._dedup_secret = dedup_secret
        self._wall = wall_clock
        self._clock = clock
        self._name = name
        self._advertise = settings.advertise or advertise
        self._self_raft = settings.raft.self_address
        self._peers = settings.peer_map()
        self._adverts: dict[str, str] = {}
        self._started_at = clock()
        self._window_ms = int(settings.timestamp_window_s * 1000)
        self._keys = DeviceKeys(fleet_key, dedup_secret)
        self._interval_ms = int(settings.rate_limit_interval_s * 1000)
        self._committer: GroupCommitter[PushEntry] = GroupCommitter(
            self._commit, max_batch=settings.group_commit_max_batch,
            max_delay_s=settings.group_commit_max_delay_ms / 1000.0,
            pipeline=settings.group_commit_pipeline, clock=clock, wake=store.wake)
        self._pump = self._committer.pump
        self._inflight = Inflight()
        self._reads = KeyedLimiter(settings.pull_interval_s, settings.pull_burst, clock=clock)
        self._pull_cache: OrderedDict[tuple[int, str, int], bytes] = OrderedDict()
        self._pull_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._stop = threading.Event()
        self._maint: threading.Thread | None = None
        #: Metrics hook (``omega.ops.metrics``): called with each acknowledged push's
        #: latency in ms, from its acceptance to its ack (Raft commit included).
        self.push_timer: Callable[[float], None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ShardService:
        """Drive the group committer from the Raft thread; start the leader's
        advertisement check."""
        if self._maint is None:
            self._store.add_tick_hook(self._pump)
            self._maint = threading.Thread(target=self._maintain, name="omega-shard-maint",
                                           daemon=True)
            self._maint.start()
        return self

    def close(self) -> None:
        """Stop; pushes still queued are answered ``unavailable``. Idempotent."""
        self._stop.set()
        self._store.remove_tick_hook(self._pump)
        self._committer.close()
        if self._maint is not None:
            self._maint.join(5.0)

    def __enter__(self) -> ShardService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the handler -----------------------------------------------------------------

    def handle(self, frame: bytes) -> Reply:
        """One device request → its reply frame, or a ``Pending`` one (an accepted push,
        answered once committed). Never raises for bad input."""
        try:
            msg = decode(frame, allowed=_DEVICE_TYPES)
            if isinstance(msg, Push):
                reply: Message | bytes | Pending = self._push(msg)
            elif isinstance(msg, Pull):
                reply = self._pull(msg)
            elif isinstance(msg, Heartbeat):
                reply = self._heartbeat(msg)
            else:
                reply = self._health()
        except ProtocolError as exc:
            self._count(f"error.{exc.code}")
            return encode(ErrorReply.from_error(exc))
        if isinstance(reply, bytes):  # a cached, already encoded PullResp
            self._count("ok.PullResp")
            return reply
        if isinstance(reply, Pending):
            return reply
        self._count(f"ok.{type(reply).__name__}")
        return encode(reply)

    def on_error(self, exc: BaseException) -> bytes:
        """For ``RpcServer``: the reply to a handler that failed unexpectedly."""
        self._count("error.internal")
        return encode(ErrorReply.from_error(exc))

    # -- push ------------------------------------------------------------------------

    def _push(self, msg: Push) -> Message | Pending:
        s = self.settings
        check_push_shape(msg, s)
        now_ms = int(self._wall() * 1000)
        device_key, dhash = self._keys.get(msg.device_id)
        verify(msg, device_key, now_ms, self._window_ms)
        if not self._store.is_leader():
            raise self._not_leader()
        digest = report_digest(msg.reports)
        with self._store.read() as kv:
            check_registry(state.registry_status(kv, dhash), s.registration)
            rec = state.device_record(kv, dhash)
            stored = state.stored_reports(kv) if msg.reports else 0
        verdict = classify_sequence(msg.seq, rec.last_seq if rec else None)
        if verdict == "retry":
            assert rec is not None
            if rec.digest != digest:
                raise Replay("sequence number already used by a different push")
            self._count("push.retry_acked")
            return PushAck(msg.seq, rec.ack_version, s.rate_limit_interval_s)
        if verdict == "replay":
            raise Replay(f"sequence number {msg.seq} is below the last acknowledged one")
        wait = push_retry_after(rec.last_ms if rec else None, now_ms, self._interval_ms)
        if wait is not None:
            raise RateLimited("one push per device per interval", retry_after_s=wait)
        if stored + len(msg.reports) > s.max_stored_reports:
            raise Unavailable("report storage is full; forwarding is behind",
                              retry_after_s=s.rate_limit_interval_s or 1.0)
        deadline = self._clock() + s.push_timeout_s
        entry = PushEntry(dhash, msg.seq, digest, msg.reports)
        try:
            kind, ticket = self._inflight.claim(
                dhash, msg.seq, lambda: self._committer.submit(entry, deadline))
        except StoreError as exc:
            raise Unavailable(f"cannot queue the push: {exc}",
                              retry_after_s=_RETRY_SOON_S) from None
        if kind == "busy" or ticket is None:
            raise RateLimited("another push of this device is being committed",
                              retry_after_s=max(s.rate_limit_interval_s, _RETRY_SOON_S))
        # Answered from the Raft thread once the batch's outcome is known; the
        # request's worker thread goes back to receiving now.
        reply = Pending()
        seq = msg.seq
        ticket.add_done_callback(lambda t: reply.resolve(self._push_reply(t, seq, deadline)))
        return reply

    def _push_reply(self, ticket: Ticket, seq: int, deadline: float | None = None) -> bytes:
        """The reply to an accepted push, from its batch's outcome (Raft thread).
        Never raises: the device must hear something."""
        try:
            result, error = ticket.outcome()
            if error is not None:
                raise self._commit_error(error) from None
            if not isinstance(result, PushOutcome):
                raise Unavailable("unexpected commit result", retry_after_s=_RETRY_SOON_S)
            if result.status not in ("applied", "duplicate"):
                raise Replay(f"sequence number {seq} was already used ({result.status})")
            frame = encode(PushAck(seq, result.version, self.settings.rate_limit_interval_s))
            self._count("ok.PushAck", f"push.{result.status}")
            timer = self.push_timer
            if timer is not None and deadline is not None:
                timer((self._clock() - deadline + self.settings.push_timeout_s) * 1000.0)
            return frame
        except ProtocolError as exc:
            self._count(f"error.{exc.code}")
            return encode(ErrorReply.from_error(exc))
        except Exception as exc:
            log.exception("push reply failed")
            return self.on_error(exc)

    def _commit_error(self, error: BaseException) -> ProtocolError:
        """What a device hears when its push's batch failed: retry it unchanged (the
        state machine applies a (device, sequence) at most once), maybe elsewhere."""
        if isinstance(error, BatchExpired | CommitTimeout):
            return Unavailable("the push was not committed in time; retry it unchanged",
                               retry_after_s=_RETRY_SOON_S)
        if isinstance(error, NotLeader):
            return self._not_leader()
        if isinstance(error, LeaderChanged):
            # Outcome unknown (or discarded).
            if not self._store.is_leader():
                return self._not_leader()
            return Unavailable("leader changed; retry unchanged", retry_after_s=_RETRY_SOON_S)
        if isinstance(error, StoreError):
            return Unavailable(f"not committed: {type(error).__name__}",
                               retry_after_s=_RETRY_SOON_S)
        log.error("push commit failed unexpectedly", exc_info=error)
        return Unavailable("not committed", retry_after_s=_RETRY_SOON_S)

    def _commit(self, entries: Sequence[PushEntry], timeout_s: float, done: DoneFn) -> None:
        """Group committer → one Raft entry (on the Raft thread); ``done`` is called
        there once the entry is applied, or has failed."""
        cmd = PushBatch(int(self._wall() * 1000), self.settings.k_anonymity, tuple(entries))

        def on_done(result: Any, error: StoreError | None) -> None:
            if error is None and (not isinstance(result, list) or len(result) != len(entries)):
                error = StoreError(f"push batch answered {result!r}")
            done(result, error)

        self._store.submit_async(encode_command(cmd), max(0.001, timeout_s), on_done)

    def _not_leader(self) -> NotLeaderError:
        leader = self._store.leader()
        address = self.device_address(leader) if leader else None
        self._count("push.not_leader")
        return NotLeaderError("this replica is not the leader", leader=address)

    def device_address(self, raft_address: str) -> str | None:
        """The device-facing address of the node at ``raft_address``, if known."""
        if raft_address in self._peers:
            return self._peers[raft_address]
        if raft_address == self._self_raft and self._advertise:
            return self._advertise
        found = self._adverts.get(raft_address)
        if found is None:
            with self._store.read() as kv:
                self._adverts = state.advertised(kv)
            found = self._adverts.get(raft_address)
        return found

    # -- pull, heartbeat, health -----------------------------------------------------

    def _pull(self, msg: Pull) -> bytes:
        device_key, dhash = self._keys.get(msg.device_id)
        verify(msg, device_key, int(self._wall() * 1000), self._window_ms)
        self._limit_reads(dhash)
        with self._store.read() as kv:
            check_registry(state.registry_status(kv, dhash), self.settings.registration)
            current = state.global_version(kv)
            # A cursor from the future (the shard was rebuilt): start over.
            since = msg.since_version if msg.since_version <= current else 0
            # Most devices ask for the same delta (since the last release): answer it
            # from a small cache keyed by what determines the answer.
            key = (since, msg.region, current)
            if not msg.want:
                with self._pull_lock:
                    cached = self._pull_cache.get(key)
                if cached is not None:
                    self._count("pull.cached")
                    return cached
            wanted = [r for r in (state.global_record(kv, state.KIND_CONTENT, w.encode())
                                  for w in msg.want) if r is not None]
            plan = build_pull(state.changes_since(kv, since), current=current,
                              region=msg.region, wanted=wanted,
                              max_records=self.settings.pull_max_records,
                              max_bytes=self.settings.pull_max_bytes,
                              hub_key=state.hub_key(kv))
        self._count("pull.records", n=plan.records)
        frame = encode(plan.response)
        if not msg.want:
            with self._pull_lock:
                self._pull_cache[key] = frame
                while len(self._pull_cache) > _PULL_CACHE:
                    self._pull_cache.popitem(last=False)
        return frame

    def _heartbeat(self, msg: Heartbeat) -> Message:
        device_key, dhash = self._keys.get(msg.device_id)
        verify(msg, device_key, int(self._wall() * 1000), self._window_ms)
        self._limit_reads(dhash)
        with self._store.read() as kv:
            return HeartbeatAck(state.global_version(kv))

    def _limit_reads(self, dhash: bytes) -> None:
        wait = self._reads.acquire(dhash)
        if wait is not None:
            raise RateLimited("too many pulls or heartbeats", retry_after_s=wait)

    def _health(self) -> Message:
        status = "ok" if self._store.leader() else "degraded"
        return HealthReply("shard", self._name, status, max(0.0, self._clock() - self._started_at),
                           __version__)

    # -- operator and federation API -------------------------------------------------

    def submit(self, cmd: Command, timeout_s: float | None = None) -> Any:
        """Propose one command on the leader (raises ``omega.raft.NotLeader`` elsewhere)."""
        return self._store.submit(encode_command(cmd), timeout_s or self.settings.push_timeout_s)

    def set_global_update(self, update: GlobalUpdate, timeout_s: float | None = None
                          ) -> tuple[str, int]:
        """Replicate one part of a global release; returns ("applied"|"stale", cursor)."""
        cmd = SetGlobal(update.version, update.part, update.parts, records_of(update),
                        update.content_base)
        result: tuple[str, int] = self.submit(cmd, timeout_s)
        return result

    def register_devices(self, device_ids: Iterable[str], *, revoke: bool = False,
                         timeout_s: float | None = None) -> None:
        """Provision (or revoke) devices by id; only their keyed hashes are stored."""
        hashes = tuple(device_hash(self._dedup_secret, d) for d in device_ids)
        self.submit(Registry(() if revoke else hashes, hashes if revoke else ()), timeout_s)

    def take_batch(self, min_devices: int | None = None) -> ReportBatch | None:
        """The oldest closed bucket of reports from at least ``min_devices`` devices.

        ``min_devices`` cannot go below ``k_anonymity``. Reports come shuffled (on top
        of the storage order, which is already unrelated to arrival). Call
        ``release_batch(batch.bucket)`` once the receiver stored it (``omega.federation.forward``).
        """
        k = max(min_devices or 0, self.settings.k_anonymity)
        with self._store.read() as kv:
            batch = state.take_batch(kv, k)
        if batch is None:
            return None
        reports = list(batch.reports)
        secrets.SystemRandom().shuffle(reports)
        return ReportBatch(batch.bucket, batch.devices, tuple(reports))

    def is_leader(self) -> bool:
        """Whether this replica leads its group now (forwarding runs only there)."""
        return self._store.is_leader()

    def held_buckets(self) -> tuple[int, int]:
        """``(closed buckets waiting to be forwarded, reports in them)``."""
        with self._store.read() as kv:
            closed = [b for b in state.buckets(kv) if b.closed]
        return len(closed), sum(b.reports for b in closed)

    def release_versions(self) -> tuple[int, int]:
        """``(newest hub release seen, newest release with every part applied)``."""
        with self._store.read() as kv:
            c = state.counters(kv)
        return c["release"], c["release_complete"]

    def close_open_bucket(self, min_devices: int | None = None) -> Any:
        """Close the open bucket early if at least ``max(min_devices, k)`` devices fed it
        (a forward on demand); ``("closed"|"open", bucket)``."""
        k = max(min_devices or 0, self.settings.k_anonymity)
        return self.submit(CloseOpen(k))

    def release_batch(self, bucket: int) -> Any:
        """The bucket was forwarded upstream: delete it (replicated)."""
        return self.submit(ReleaseBatch(bucket))

    # -- views -----------------------------------------------------------------------

    def raft_status(self) -> dict[str, Any]:
        """For ``omega-node ctl raft``: role, term, leader, commit/applied index, log, snapshot."""
        st = dict(self._store.status())
        leader = st.get("leader")
        st["leader_device_address"] = self.device_address(leader) if leader else None
        st["advertise"] = self._advertise
        return st

    def stats(self) -> dict[str, Any]:
        with self._counts_lock:
            counts = dict(self._counts)
        with self._store.read() as kv:
            st = state.counters(kv)
        return {"requests": counts, "group_commit": self._committer.stats(),
                "device_keys": self._keys.info(),
                "inflight": len(self._inflight), "state": st,
                "leader": self._store.is_leader()}

    def state_hash(self) -> str:
        return self._store.state_hash()

    # -- internals -------------------------------------------------------------------

    def _count(self, key: str, also: str = "", n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n
            if also:
                self._counts[also] += n

    def _maintain(self) -> None:
        # The leader makes sure its device-facing address is replicated, so that
        # followers can send devices to it.
        while not self._stop.wait(self.settings.advertise_check_s):
            if not self._advertise or not self._store.is_leader():
                continue
            try:
                with self._store.read() as kv:
                    known = state.advertised(kv)
                self._adverts = known
                if known.get(self._self_raft) != self._advertise:
                    self.submit(Advertise(self._self_raft, self._advertise), timeout_s=2.0)
            except StoreError as exc:
                log.info("advertisement not replicated yet", extra={"fields": {
                    "error": type(exc).__name__}})
