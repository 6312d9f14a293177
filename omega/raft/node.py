"""``ReplicatedLmdb``: a Raft group (PySyncObj) applying commands to LMDB.

The only module that imports pysyncobj. PySyncObj runs one "tick" thread per
replica: it talks to the partners, appends and commits entries, and calls the
replicated method ``_apply_entry`` for each committed entry in log order — which
runs ``apply`` through ``LmdbStore.apply_entry``. ``submit`` (any thread) hands a
command to that thread with a callback and waits for the callback;
``submit_async`` returns at once and its ``on_done`` runs on that thread (the
shard answers a whole batch of devices from there, with no thread hand-off).
``add_tick_hook`` runs a function on that thread on every tick, and ``wake()``
makes it tick now: the shard's group committer proposes its batches from there.

How PySyncObj is configured, and why (see docs/raft.md):

- ``appendEntriesUseBatch=False``: a synchronous caller does not wait ~100 ms for
  a batch; the shard batches pushes into one command itself.
- ``journalFile`` on: entries survive a restart; ``fullDumpFile`` + our
  ``serializer``/``serializeChecker``/``deserializer``: snapshots carry LMDB
  (``omega.raft.snapshots``); a custom serializer never forks.
- ``bindAddress`` = ``self_address``: PySyncObj would otherwise bind 0.0.0.0.
- ``password`` required (pickle on the wire) unless ``dev_mode`` on loopback.
- ``commandsWaitLeader=False``, and ``submit`` refuses on a follower: the shard
  answers ``not_leader`` with the leader's address instead of forwarding.
- ``appendEntriesBatchSizeBytes`` > 2 × ``max_command_bytes``: PySyncObj's
  chunked sending of one oversized entry misplaces its "finish" marker for some
  sizes; commands are kept well below the chunking threshold.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj import pickle as _pysyncobj_pickle
from pysyncobj import tcp_connection as _pysyncobj_tcp
from pysyncobj import tcp_server as _pysyncobj_tcp_server
from pysyncobj import transport as _pysyncobj_transport
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.encryptor import HAS_CRYPTO
from pysyncobj.syncobj import SyncObjException
from pysyncobj.transport import TCPTransport

from omega.raft import integrity, wire
from omega.raft.errors import (
    ApplyError,
    CommandTooLarge,
    CommitTimeout,
    Discarded,
    LeaderChanged,
    NotLeader,
    PasswordRequired,
    QueueFull,
    RaftError,
    StorageFailure,
    StoreClosed,
)
from omega.raft.journal import DurableJournal
from omega.raft.kv import SKIPPED, LmdbStore
from omega.raft.ports import ApplyFailed, ApplyFn, KvReader
from omega.raft.settings import RaftSettings, is_loopback, password_weakness, split_address
from omega.raft.snapshots import CheckState, Snapshotter

__all__ = ["ReplicatedLmdb"]

log = logging.getLogger("omega.raft")

STATE_FILE = "state.mdb"
JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.snapshot"

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
_LEADER = 2
_CHECK_STATES: dict[CheckState, int] = {
    "idle": SERIALIZER_STATE.NOT_SERIALIZING,
    "running": SERIALIZER_STATE.SERIALIZING,
    "success": SERIALIZER_STATE.SUCCESS,
    "failed": SERIALIZER_STATE.FAILED,
}
_SYNC_PERIOD_S = 1.0


class _ResendFilter(logging.Filter):
    """Demote PySyncObj's false alarm about truncating applied entries.

    With ``appendEntriesUseBatch`` off the leader pipelines entries, and a late
    reply moves its next index for a follower back; it then resends entries the
    follower has applied, and PySyncObj truncates and re-appends them (the same
    committed entries), logging CRITICAL "state machine may have diverged". No
    entry is applied twice (applied indexes never go back, and ``apply_entry``
    skips an index at or below the stored one). Counted, logged at DEBUG.
    """

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL and str(record.msg).startswith(
                "truncating already-applied log entries"):
            _ResendFilter.count += 1
            log.debug("pysyncobj re-appended applied entries resent by the leader",
                      extra={"fields": {"detail": record.getMessage()}})
            return False
        return True


logging.getLogger("pysyncobj.syncobj").addFilter(_ResendFilter())


class _WireCodec:
    """Stands in for ``zlib`` in PySyncObj's TCP connection: messages go uncompressed.

    PySyncObj zlib-compresses (level 3) every message, with no setting to turn it
    off. Our entries are mostly sealed reports, which do not compress: on the leader
    it cost ~25 µs of CPU per push for nothing (and the followers paid to inflate).
    A message that starts like a zlib stream (first byte 0x78) is still inflated, so
    this side reads a compressing peer; PySyncObj's pickle (protocol 2) starts with
    0x80, so the two cannot be confused. With a password the (uncompressed) pickle
    is encrypted as before. Both sides of a group must run this build: an unpatched
    PySyncObj cannot read uncompressed messages (its connection drops).
    """

    error = zlib.error

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return data

    @staticmethod
    def decompress(data: bytes) -> bytes:
        if data[:1] == b"\x78":
            return zlib.decompress(data)
        return data


# The one place this name is used: TcpConnection.send / __processParseMessage.
_pysyncobj_tcp.zlib = _WireCodec
# Importing PySyncObj replaces socket.inet_ntop (and inet_pton where missing) with
# Windows-only versions, for the whole process (pysyncobj/win_inet_pton.py): put
# the real ones back (pynng formats peer addresses with inet_ntop).
socket.inet_ntop = _socket.inet_ntop
socket.inet_pton = _socket.inet_pton


class _GuardedTcpConnection(wire.FrameGuard, _pysyncobj_tcp.TcpConnection):  # type: ignore[misc]
    """PySyncObj's connection with bounded frames, linear buffering and a read
    budget per event (omega/raft/wire.py)."""

    loads = staticmethod(_pysyncobj_pickle.loads)
    decompress = staticmethod(_WireCodec.decompress)


# The two modules that construct connections (incoming: the server; outgoing).
_pysyncobj_tcp_server.TcpConnection = _GuardedTcpConnection
_pysyncobj_transport.TcpConnection = _GuardedTcpConnection


#: ``on_done(result, error)``: exactly one of them is meaningful (``error`` is None
#: when the command was applied: ``result`` is what ``apply`` returned).
OnDone = Callable[[Any, RaftError | None], None]


class _Waiter:
    """One submitted command waiting for its outcome (resolved once, by its owner)."""

    __slots__ = ("deadline", "on_done")

    def __init__(self, on_done: OnDone, deadline: float) -> None:
        self.on_done = on_done
        self.deadline = deadline


class _GuardedTransport(TCPTransport):  # type: ignore[misc]
    """PySyncObj's TCP transport, hardened for an open port (omega/raft/wire.py).

    - syncs the journal before any message leaves (when the journal is durable);
    - gives every connection this replica's frame limit;
    - refuses a new incoming connection while ``max_unauthenticated`` others have
      not authenticated yet, and drops one that has not within ``auth_timeout_s``
      (PySyncObj keeps a silent unidentified connection forever: its own timeout
      is only looked at when the connection has an event).
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        guard: _PortGuard = syncObj.port_guard
        self._guard = guard
        super().__init__(syncObj, selfNode, otherNodes)

    def send(self, node: Any, message: Any) -> bool:
        self._syncObj.sync_journal()
        return bool(super().send(node, message))

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            conn.limits = self._guard.limits

    def _onNewIncomingConnection(self, conn: Any) -> None:
        conn.limits = self._guard.limits
        waiting = sum(1 for c in self._unknownConnections if not c.authenticated)
        if waiting >= self._guard.max_unauthenticated:
            wire.counters.add("refused_connections")
            wire.pressure_log.event("raft_unauthenticated_cap", "raft port: too many "
                                    "unauthenticated connections; new one refused", {
                                        "peer": conn.peer(), "waiting": waiting})
            conn.disconnect()
            return
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:
        super()._onTick()
        if not self._unknownConnections:
            return
        cutoff = time.monotonic() - self._guard.auth_timeout_s
        late = [c for c in self._unknownConnections
                if not c.authenticated and c.opened_at < cutoff]
        for conn in late:
            wire.counters.add("auth_timeouts")
            wire.pressure_log.event("raft_auth_timeout", "raft port: connection did not "
                                    "authenticate in time; dropped", {
                                        "peer": conn.peer(),
                                        "auth_timeout_s": self._guard.auth_timeout_s})
            conn.disconnect()
            self._unknownConnections.discard(conn)


class _PortGuard:
    """The Raft port's limits for one replica (read by its transport)."""

    def __init__(self, settings: RaftSettings, batch_bytes: int) -> None:
        self.limits = wire.WireLimits(wire.frame_limit(
            settings.max_command_bytes, batch_bytes, settings.snapshot_chunk_bytes))
        self.auth_timeout_s = settings.auth_timeout_s
        self.max_unauthenticated = settings.max_unauthenticated


class _Core(SyncObj):  # type: ignore[misc]
    """The SyncObj: one replicated method, applying a command to LMDB.

    With ``durable_journal`` PySyncObj's journal is wrapped in a
    :class:`DurableJournal`, synced before every outgoing message and before an
    entry is applied (omega/raft/journal.py says why).
    """

    def __init__(self, self_address: str, partners: Sequence[str], conf: Any,
                 on_apply: Callable[[int, bytes], Any], *, durable_journal: bool,
                 port_guard: _PortGuard) -> None:
        self._on_apply = on_apply
        self.journal: DurableJournal | None = None
        self.port_guard = port_guard  # read by _GuardedTransport, built inside __init__
        super().__init__(self_address, list(partners), conf, transportClass=_GuardedTransport)
        if durable_journal:
            # The tick thread already runs; swapping the attribute is atomic, and the
            # wrapper starts dirty, so anything added before it is synced too.
            slots = self.__dict__  # SyncObj's private (name-mangled) journal attribute
            self.journal = DurableJournal(slots["_SyncObj__raftLog"], Path(conf.journalFile))
            slots["_SyncObj__raftLog"] = self.journal

    def sync_journal(self) -> None:
        journal = self.journal
        if journal is not None:
            journal.sync()

    @replicated  # type: ignore[untyped-decorator]
    def _apply_entry(self, command: bytes) -> Any:
        # Called on the tick thread for each committed entry in order; the entry
        # being applied is the one after the last applied. Nothing is acknowledged
        # before the journal holding it is on disk (a one-replica group sends nothing).
        self.sync_journal()
        return self._on_apply(self.raftLastApplied + 1, command)


class ReplicatedLmdb:
    """One replica of a Raft-replicated LMDB state machine.

    ``databases`` names the LMDB databases ``apply`` and readers use (declared
    up front: LMDB opens named databases once per environment).
    """

    def __init__(self, settings: RaftSettings, data_dir: Path, password: bytes | None,
                 apply: ApplyFn, *, databases: Sequence[str] = ("main",),
                 wall: Callable[[], float] = time.time,
                 on_storage_failure: Callable[[int, StorageFailure], None] | None = None,
                 verify_store: bool = True) -> None:
        _check_password(settings, password)
        self._on_storage_failure = on_storage_failure or fail_stop
        self._settings = settings
        self._apply = apply
        self._wall = wall
        self._closed = False
        self._close_lock = threading.Lock()
        self._waiters: dict[_Waiter, None] = {}  # insertion-ordered set
        self._waiters_lock = threading.Lock()
        self._tick_hooks: list[Callable[[], None]] = []
        self._notify: Callable[[], None] | None = None
        self._role = "follower"
        self._leadership_transitions = 0
        self._tick_ident: int | None = None
        self._storage_error: str | None = None
        self._last_tick: float | None = None
        self._max_tick_gap = 0.0
        self._slow_ticks = 0
        self._step_down_until = 0.0
        self._step_downs = 0

        _probe_bind(settings)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        verdict = integrity.check_store(data_dir / STATE_FILE, list(databases)) \
            if verify_store else None
        self._store_rebuilt = verdict is not None and not verdict.ok
        self._store = LmdbStore(data_dir / STATE_FILE, databases, map_size=settings.map_size,
                                fsync=settings.fsync_commits)
        try:
            self._snapshots = Snapshotter(self._store, data_dir / DUMP_FILE, wall)
            self._snapshots.prepare_start()
            conf = self._conf(settings, data_dir, password)
            self._core = self._start_core(conf)
        except BaseException:
            self._store.close()
            raise
        log.info("raft replica started", extra={"fields": {
            "self": settings.self_address, "partners": list(settings.partners),
            "applied_index": self._store.applied_index(), "dev_mode": settings.dev_mode}})

    # -- construction ------------------------------------------------------------------

    def _conf(self, s: RaftSettings, data_dir: Path, password: bytes | None) -> Any:
        return SyncObjConf(
            password=password,
            autoTick=True,
            autoTickPeriod=min(0.05, s.heartbeat_s / 2),
            commandsQueueSize=s.commands_queue_size,
            raftMinTimeout=s.election_timeout_min_s,
            raftMaxTimeout=s.election_timeout_max_s,
            appendEntriesPeriod=s.heartbeat_s,
            connectionTimeout=s.connection_timeout_s,
            connectionRetryTime=s.connection_retry_s,
            leaderFallbackTimeout=s.leader_fallback_timeout_s,
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=2 * s.max_command_bytes + 4096,
            bindAddress=s.self_address,
            logCompactionMinEntries=s.log_compaction_min_entries,
            logCompactionMinTime=s.log_compaction_min_time_s,
            logCompactionSplit=False,
            logCompactionBatchSize=s.snapshot_chunk_bytes,
            commandsWaitLeader=False,
            journalFile=str(data_dir / JOURNAL_FILE),
            fullDumpFile=str(data_dir / DUMP_FILE),
            useFork=False,
            serializer=self._snapshots.serialize,
            serializeChecker=lambda: _CHECK_STATES[self._snapshots.check()],
            deserializer=self._snapshots.deserialize,
            dynamicMembershipChange=False,
            onStateChanged=self._on_state_changed,
            bindRetryTime=0.2,
            maxBindRetries=10,
        )

    def _start_core(self, conf: Any) -> _Core:
        # PySyncObj's tick thread stops when the thread that built the SyncObj dies;
        # build it on a thread that lives exactly as long as this replica, so the
        # caller (an actor, a request thread) may come and go.
        box: dict[str, Any] = {}
        built = threading.Event()
        self._keeper_stop = threading.Event()

        def keeper() -> None:
            try:
                box["core"] = _Core(self._settings.self_address, self._settings.partners,
                                    conf, self._on_apply,
                                    durable_journal=self._settings.fsync_journal,
                                    port_guard=_PortGuard(self._settings,
                                                          conf.appendEntriesBatchSizeBytes))
            except BaseException as exc:  # handed to the constructor's thread
                box["error"] = exc
            finally:
                built.set()
            if "core" in box:
                self._keeper_stop.wait()

        self._keeper = threading.Thread(target=keeper, name="omega-raft-owner", daemon=True)
        self._keeper.start()
        built.wait()
        if "error" in box:
            raise RaftError(f"cannot start raft: {box['error']!r}") from box["error"]
        core: _Core = box["core"]
        try:
            core.waitBinded()
        except SyncObjException as exc:
            core.destroy()
            self._keeper_stop.set()
            raise RaftError(f"cannot bind the raft port {self._settings.self_address} "
                            f"(in use, or not an address of this host)") from exc
        core.addOnTickCallback(self._on_tick)
        # PySyncObj wakes its tick thread through this pipe when a command is queued;
        # it has no public call for it. Without it, wake() is a no-op and a hook runs
        # at the next tick anyway (within autoTickPeriod).
        notifier = getattr(core, "_SyncObj__pipeNotifier", None)
        self._notify = getattr(notifier, "notify", None)
        if not self._settings.fsync_commits:
            threading.Thread(target=self._sync_loop, name="omega-raft-sync", daemon=True).start()
        return core

    def _sync_loop(self) -> None:
        # LMDB commits are not fsynced (fsync_commits off): flush once a second, off
        # the Raft thread (an fsync took up to 150 ms on a busy shared disk here).
        while not self._keeper_stop.wait(_SYNC_PERIOD_S):
            try:
                self._store.sync()
            except StoreClosed:
                return
            except RaftError as exc:
                log.error("LMDB sync failed", extra={"fields": {"error": str(exc)}})

    # -- the tick thread's side --------------------------------------------------------

    def _on_apply(self, index: int, command: bytes) -> Any:
        self._tick_ident = threading.get_ident()
        try:
            return self._store.apply_entry(index, command, self._apply)
        except StorageFailure as exc:
            # Not the command's fault: the entry is not recorded. Going on would leave
            # a replica that can neither apply nor step aside (PySyncObj retries the
            # entry on every tick, forever): stop the process (fail-stop, the
            # default); at the next start the store is verified and rebuilt.
            first = self._storage_error is None
            self._storage_error = str(exc)
            if first:
                self._on_storage_failure(index, exc)
            raise

    def _on_tick(self) -> None:
        self._tick_ident = threading.get_ident()
        now = time.monotonic()
        gap = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        if gap > self._max_tick_gap:
            self._max_tick_gap = gap
        if gap > self._settings.election_timeout_min_s:
            # The Raft thread was held up past an election timeout: partners may
            # have started an election (a starved host, a blocking callback).
            self._slow_ticks += 1
        if self._waiters:
            for waiter in [w for w in list(self._waiters) if w.deadline <= now]:
                self._resolve(waiter, None, CommitTimeout(
                    "no outcome in time; the command may still be applied"))
        if self._step_down_until:
            self._try_step_down(now)
        for hook in self._tick_hooks:
            try:
                hook()
            except Exception:  # a hook must not stop Raft
                log.exception("raft tick hook failed")

    def _try_step_down(self, now: float) -> None:
        # On the Raft thread: PySyncObj's transfer reads and sends Raft state. It is
        # denied while no follower has every entry (under load): try every tick.
        if now > self._step_down_until or not self._core._isLeader():
            self._step_down_until = 0.0
            return

        def done(_result: Any, reason: int) -> None:
            if reason == FAIL_REASON.SUCCESS:
                self._step_down_until = 0.0
                self._step_downs += 1
                log.warning("raft leadership handed over", extra={"fields": {
                    "self": self._settings.self_address}})

        self._core.transferLeadership(callback=done)

    def _on_state_changed(self, old: int, new: int) -> None:
        self._role = _ROLES.get(new, str(new))
        if new == _LEADER or old == _LEADER:
            self._leadership_transitions += 1
        log.info("raft role changed", extra={"fields": {
            "self": self._settings.self_address, "from": _ROLES.get(old), "to": self._role}})
        if old == _LEADER and new != _LEADER:
            # Fail fast: the caller learns now rather than at its deadline. The entry
            # may still be committed by the next leader (outcome unknown).
            self._fail_waiters(LeaderChanged("this replica stopped being the leader"))

    def _fail_waiters(self, error: RaftError) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            self._resolve(waiter, None, error)

    def _resolve(self, waiter: _Waiter, result: Any, error: RaftError | None) -> None:
        """Give ``waiter`` its outcome, once: the first of callback, timeout, leadership
        loss or close wins (each removes it from the registry first)."""
        with self._waiters_lock:
            if self._waiters.pop(waiter, _GONE) is _GONE:
                return
        if error is None:
            if isinstance(result, ApplyFailed):
                error = ApplyError(result.index, result.kind, result.message)
                result = None
            elif result is SKIPPED:
                error = LeaderChanged("the entry was applied before this replica learnt "
                                      "its outcome (snapshot); its result is unknown")
                result = None
        try:
            waiter.on_done(result, error)
        except Exception:
            log.exception("raft submit callback failed")

    # -- public API --------------------------------------------------------------------

    def submit(self, command: bytes, timeout_s: float) -> Any:
        """Replicate ``command``; return ``apply``'s result once committed and applied here.

        Only on the leader. Raises ``NotLeader``, ``QueueFull``, ``CommandTooLarge``,
        ``StoreClosed`` (refused), ``Discarded`` (not applied), ``LeaderChanged``,
        ``CommitTimeout`` (outcome unknown), ``ApplyError`` (applied, no effect).
        """
        if threading.get_ident() == self._tick_ident:
            raise RaftError("submit() called from apply(): it would wait for itself")
        box: list[tuple[Any, RaftError | None]] = []
        done = threading.Event()

        def on_done(result: Any, error: RaftError | None) -> None:
            box.append((result, error))
            done.set()

        waiter = self._start(command, timeout_s, on_done)
        if not done.wait(timeout_s):
            # The Raft thread expires it at the deadline; this covers a stalled one.
            self._resolve(waiter, None, CommitTimeout(
                f"no outcome within {timeout_s} s; the command may still be applied"))
            done.wait(1.0)  # whoever resolved it is calling on_done
        if not box:
            raise CommitTimeout(f"no outcome within {timeout_s} s; the command may still "
                                f"be applied")
        result, error = box[0]
        if error is not None:
            raise error
        return result

    def submit_async(self, command: bytes, timeout_s: float, on_done: OnDone) -> None:
        """Replicate ``command`` without waiting: ``on_done(result, error)`` is called
        once, on the Raft thread (or the thread that closes the store).

        ``error`` is None when the command was applied here (``result`` is what
        ``apply`` returned), else one of ``submit``'s errors after the command was
        proposed: ``Discarded``, ``LeaderChanged``, ``CommitTimeout`` (after
        ``timeout_s``; the command may still be applied), ``ApplyError``,
        ``StoreClosed``, ``NotLeader``, ``QueueFull``. Refusals known at once
        (``NotLeader``, ``CommandTooLarge``, ``StoreClosed``) are raised here instead.
        May be called from the Raft thread (an ``on_done`` or a tick hook).
        """
        self._start(command, timeout_s, on_done)

    def _start(self, command: bytes, timeout_s: float, on_done: OnDone) -> _Waiter:
        if self._closed:
            raise StoreClosed("the replicated store is closed")
        if not isinstance(command, bytes):
            raise TypeError(f"command must be bytes, got {type(command).__name__}")
        if len(command) > self._settings.max_command_bytes:
            raise CommandTooLarge(len(command), self._settings.max_command_bytes)
        if not self._core._isLeader():
            raise NotLeader(self.leader())
        waiter = _Waiter(on_done, time.monotonic() + timeout_s)
        with self._waiters_lock:
            self._waiters[waiter] = None
        # A full wake-up pipe raises after the command was queued: it still runs.
        with contextlib.suppress(BlockingIOError):
            self._core._apply_entry(command, callback=_Callback(waiter, self))
        return waiter

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` on the Raft thread at every tick (after PySyncObj's own work).

        Keep it short: Raft heartbeats wait for it. An exception is logged.
        """
        self._tick_hooks = [*self._tick_hooks, hook]

    def remove_tick_hook(self, hook: Callable[[], None]) -> None:
        self._tick_hooks = [h for h in self._tick_hooks if h != hook]

    def wake(self) -> None:
        """Make the Raft thread tick soon (from any thread): tick hooks run then."""
        notify = self._notify
        if notify is not None and not self._closed:
            with contextlib.suppress(OSError):  # a full pipe already means "wake up"
                notify()

    def read(self) -> AbstractContextManager[KvReader]:
        """A consistent read-only view of this replica's state (may trail the leader).

        Use as ``with store.read() as view:``; keep it short.
        """
        if self._closed:
            raise StoreClosed("the replicated store is closed")
        return self._store.reader()

    def is_leader(self) -> bool:
        return not self._closed and bool(self._core._isLeader())

    def leader(self) -> str | None:
        """The leader's Raft address as this replica knows it, or ``None``."""
        node = self._core._getLeader()
        return None if node is None else str(getattr(node, "address", node.id))

    def status(self) -> dict[str, Any]:
        """Role, term, leader, indexes, log size, snapshots, partners (for ops and tests)."""
        core = self._core
        partners = {}
        for node in sorted(core.otherNodes, key=lambda n: str(n.id)):
            partners[str(node.id)] = bool(core.isNodeConnected(node))
        connected = sum(partners.values()) + 1
        return {
            "self": self._settings.self_address,
            "role": "closed" if self._closed else self._role,
            "term": int(core.raftCurrentTerm),
            "leader": self.leader(),
            "commit_index": int(core.raftCommitIndex),
            "applied_index": int(core.raftLastApplied),
            "state_index": self._store.applied_index() if not self._closed else None,
            "log_size": int(core._getRaftLogSize()),
            "has_quorum": connected > (len(partners) + 1) / 2,
            "partners": partners,
            "last_snapshot": dict(self._snapshots.last) if self._snapshots.last else None,
            "snapshots_made": self._snapshots.made,
            "snapshots_installed": self._snapshots.installed,
            "snapshots_failed": self._snapshots.failed,
            "replays_skipped": self._store.skipped,
            "leadership_transitions": self._leadership_transitions,
            "max_tick_gap_s": round(self._max_tick_gap, 4),
            "slow_ticks": self._slow_ticks,
            "resent_applied_entries": _ResendFilter.count,
            "storage_error": self._storage_error,
            "store_rebuilt": self._store_rebuilt,
            "step_downs": self._step_downs,
            "raft_port": wire.counters.snapshot(),
            "journal": core.journal.stats() if core.journal is not None else {"fsync": False},
        }

    def state_hash(self) -> str:
        """SHA-256 over every application database (equal on replicas at equal index)."""
        return self._store.state_hash()[1]

    def state_digest(self) -> tuple[int, str]:
        """``(applied index, state hash)`` read from one transaction."""
        return self._store.state_hash()

    def step_down(self, within_s: float = 2.0) -> None:
        """Hand leadership to the most caught-up follower (any thread; best effort).

        For a leader that cannot do its job (its device port is saturated): the
        group elects another rather than stay behind an unusable leader. Tried on
        every tick for ``within_s``; ``status()["step_downs"]`` counts the handovers.
        """
        if self._closed:
            return
        self._step_down_until = time.monotonic() + within_s
        self.wake()

    def force_snapshot(self) -> None:
        """Compact the log at the next tick (ops; normally by size or age)."""
        self._core.forceLogCompaction()

    def close(self) -> None:
        """Stop Raft (the port closes), fail waiting submits, close LMDB. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._core.destroy_synchronous()
        self._keeper_stop.set()
        self._fail_waiters(StoreClosed("the replicated store was closed"))
        self._snapshots.cancel_and_wait()
        self._snapshots.check()  # discards the cancelled copy
        seal = None
        if self._storage_error is None:
            try:  # what the next start compares the store with (omega/raft/integrity.py)
                seal = self._store.state_hash()
            except RaftError as exc:
                log.warning("state not sealed at close", extra={"fields": {"error": str(exc)}})
        self._store.close()
        if seal is not None:
            integrity.write_seal(self._store.path, *seal)
        log.info("raft replica closed", extra={"fields": {"self": self._settings.self_address}})

    def __enter__(self) -> ReplicatedLmdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Callback:
    """PySyncObj's ``callback(result, fail_reason)`` → our waiter, errors translated."""

    __slots__ = ("_owner", "_waiter")

    def __init__(self, waiter: _Waiter, owner: ReplicatedLmdb) -> None:
        self._waiter = waiter
        self._owner = owner

    def __call__(self, result: Any, reason: int) -> None:
        if reason == FAIL_REASON.SUCCESS:
            self._owner._resolve(self._waiter, result, None)
        else:
            self._owner._resolve(self._waiter, None, _translate(reason, self._owner))


_GONE: Any = object()


def _translate(reason: int, owner: ReplicatedLmdb) -> RaftError:
    if reason == FAIL_REASON.QUEUE_FULL:
        return QueueFull("raft command queue is full")
    if reason == FAIL_REASON.DISCARDED:
        return Discarded("a new leader replaced this entry; it was not applied")
    if reason in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
        return NotLeader(owner.leader())
    if reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        return LeaderChanged(f"leadership changed (pysyncobj reason {reason}); the "
                             f"command may still be applied")
    return RaftError(f"raft refused the command (pysyncobj reason {reason})")


#: Exit status of a replica stopped by a storage failure (EX_IOERR).
EXIT_STORAGE_FAILURE = 74


def fail_stop(index: int, exc: StorageFailure) -> None:
    """Default ``on_storage_failure``: one clear log line, then end the process."""
    log.critical("storage failure: this replica stops (fail-stop); restart it: the store "
                 "is verified at start and rebuilt from the snapshot, journal or leader "
                 "if damaged", extra={"fields": {"index": index, "error": str(exc),
                                                  "exit_status": EXIT_STORAGE_FAILURE}})
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_STORAGE_FAILURE)  # not SystemExit: this runs on PySyncObj's thread


def _probe_bind(settings: RaftSettings) -> None:
    """Fail fast, with a clear error, if the Raft address cannot be bound here."""
    host, port = split_address(settings.self_address)
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RaftError(f"raft.self_address {settings.self_address}: cannot resolve: {exc}") \
            from exc
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PySyncObj binds
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise RaftError(f"cannot bind the raft port {settings.self_address}: {exc.strerror} "
                            f"(in use, or not an address of this host)") from exc


def _check_password(settings: RaftSettings, password: bytes | None) -> None:
    if password is None:
        if not settings.dev_mode:
            raise PasswordRequired(
                "refusing to open the Raft port without a password: its wire format is "
                "pickle, so anyone reaching it could run code here. Give the cluster "
                "password (node config [secrets]) or, for a local run on a loopback "
                "address, set raft.dev_mode = true")
        if not is_loopback(settings.self_host):
            raise PasswordRequired(
                f"raft.dev_mode allows no password on a loopback address only, not "
                f"{settings.self_address}: give the cluster password")
        log.warning("raft port without password (dev_mode, loopback only)",
                    extra={"fields": {"self": settings.self_address}})
        return
    if not isinstance(password, bytes):
        raise PasswordRequired("the cluster password must be bytes")
    weakness = password_weakness(password)
    if weakness is not None:
        raise PasswordRequired(weakness)
    if not HAS_CRYPTO:
        raise RaftError("the Raft password needs the 'cryptography' package: install it")
