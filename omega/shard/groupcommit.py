"""Group commit: many accepted pushes ride in one Raft entry.

Request handlers call ``GroupCommitter.submit(item, deadline)`` and get a
``Ticket``: a one-shot result cell. The committer has no thread of its own: its
driver calls ``pump()`` — for the shard, the Raft thread on every tick
(``ReplicatedLmdb.add_tick_hook``), woken by ``submit`` when work arrives on an idle
group. ``pump`` proposes a batch when fewer than ``pipeline`` are being committed:
at once when none is (a lone push waits for nothing), else once ``max_batch``
items are queued or the oldest has waited ``max_delay_s`` (lingering for company
while a batch is on its way). ``commit`` (for the shard: encode one Raft command
and ``submit_async`` it) reports the batch's outcome later through a callback;
each item's ticket then gets its own result, or the batch's exception (not leader,
leader changed, timeout): a push is acknowledged only after the entry that carries
it is applied.

A ticket's callbacks run in the thread that resolves it — for the shard the Raft
thread, which thus answers the devices of a whole batch (``RpcServer`` deferred
replies) with no thread hand-off: between a push's arrival and its reply the only
wake-ups are the Raft thread's own. ``Ticket.result(timeout)`` blocks, for callers
that want to.

``Inflight`` is the table that keeps one push per device in flight: a retry of
the same push joins the pending ticket instead of proposing it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from omega.errors import StoreError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("omega.shard")


class BatchExpired(StoreError):
    """The item's deadline passed before it was proposed; it was never proposed."""


class CommitterClosed(StoreError):
    """The committer is closed; the item was never proposed."""


#: ``done(results, error)``: ``results`` has one entry per item (its value, or an
#: exception for that item) when ``error`` is None; else the whole batch failed.
DoneFn = Callable[[Sequence[Any] | None, BaseException | None], None]
#: ``commit(items, timeout_s, done)`` starts committing ``items`` and calls ``done``
#: once, from any thread, maybe before returning. ``timeout_s``: the time left to
#: the latest deadline among the items. Raising means the batch failed.
CommitFn = Callable[[Sequence[T], float, DoneFn], None]

_UNSET: Any = object()


class TicketTimeout(StoreError):
    """``Ticket.result(timeout)`` returned before the ticket was resolved."""


class Ticket:
    """A one-shot result: set once (a value or an exception), read by callbacks.

    Lighter than ``concurrent.futures.Future``: no condition variable unless someone
    blocks in ``result``; callbacks run in the resolving thread, in order, each
    once (a callback added after resolution runs at once, in the adding thread).
    """

    __slots__ = ("_callbacks", "_error", "_lock", "_ready", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Ticket], object]] = []
        self._ready: threading.Event | None = None

    def done(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def set_result(self, value: Any) -> bool:
        return self._resolve(value, None)

    def set_exception(self, exc: BaseException) -> bool:
        return self._resolve(_UNSET, exc)

    def _resolve(self, value: Any, exc: BaseException | None) -> bool:
        with self._lock:
            if self.done():
                return False
            if exc is not None:
                self._error = exc
            else:
                self._value = value
            callbacks, self._callbacks = self._callbacks, []
            ready = self._ready
        if ready is not None:
            ready.set()
        for cb in callbacks:
            _run_callback(cb, self)
        return True

    def add_done_callback(self, cb: Callable[[Ticket], object]) -> None:
        with self._lock:
            if not self.done():
                self._callbacks.append(cb)
                return
        _run_callback(cb, self)

    def outcome(self) -> tuple[Any, BaseException | None]:
        """``(value, None)`` or ``(None, exception)``; only once ``done()``."""
        if self._error is not None:
            return None, self._error
        return self._value, None

    def result(self, timeout: float | None = None) -> Any:
        """Block until resolved; return the value or raise the exception."""
        with self._lock:
            if not self.done() and self._ready is None:
                self._ready = threading.Event()
            ready = self._ready
        if ready is not None and not ready.wait(timeout):
            raise TicketTimeout(f"no result within {timeout} s")
        value, error = self.outcome()
        if error is not None:
            raise error
        return value


def _run_callback(cb: Callable[[Ticket], object], ticket: Ticket) -> None:
    try:
        cb(ticket)
    except Exception:  # one failing callback must not keep the others from running
        log.exception("group commit callback failed")


@dataclass
class _Pending(Generic[T]):
    item: T
    ticket: Ticket
    deadline: float
    enqueued: float


class GroupCommitter(Generic[T]):
    """Batch items from many threads into commits, ``pipeline`` at a time, driven by
    ``pump()`` from one thread (the Raft thread for the shard)."""

    def __init__(self, commit: CommitFn[T], *, max_batch: int, max_delay_s: float,
                 pipeline: int = 1, max_queue: int = 100_000,
                 clock: Callable[[], float] = time.monotonic,
                 wake: Callable[[], None] | None = None) -> None:
        if max_batch < 1 or max_delay_s < 0 or pipeline < 1 or max_queue < 1:
            raise ValueError("max_batch >= 1, max_delay_s >= 0, pipeline >= 1, max_queue >= 1")
        self._commit = commit
        self._max_batch = max_batch
        self._max_delay = max_delay_s
        self._pipeline = pipeline
        self._max_queue = max_queue
        self._clock = clock
        self._wake = wake
        self._queue: deque[_Pending[T]] = deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self._batches = 0
        self._items = 0
        self._expired = 0
        self._failed_batches = 0
        self._commit_s = 0.0  # from proposal to outcome, successful batches
        self._wait_s = 0.0  # time items waited in the queue before their batch went
        self._largest = 0

    # -- producers (any thread) ----------------------------------------------------

    def submit(self, item: T, deadline: float) -> Ticket:
        """Queue ``item``; its ticket resolves once the batch carrying it is committed."""
        ticket = Ticket()
        with self._lock:
            if self._closed:
                raise CommitterClosed("shard is shutting down")
            if len(self._queue) >= self._max_queue:
                raise BatchExpired("commit queue full")
            self._queue.append(_Pending(item, ticket, deadline, self._clock()))
            n = len(self._queue)
            # An idle group proposes at once; a full batch does not wait for the linger.
            wake = (n == 1 and self._in_flight == 0) or n == self._max_batch
        if wake and self._wake is not None:
            self._wake()
        return ticket

    # -- the driver ------------------------------------------------------------------

    def pump(self) -> None:
        """Propose what is due (see the module doc); call it from one thread."""
        while True:
            expired: list[_Pending[T]] = []
            batch: list[_Pending[T]] | None = None
            with self._lock:
                if self._closed:
                    return
                now = self._clock()
                q = self._queue
                while q and q[0].deadline <= now:
                    expired.append(q.popleft())
                if q and self._in_flight < self._pipeline and (
                        self._in_flight == 0 or len(q) >= self._max_batch
                        or now - q[0].enqueued >= self._max_delay):
                    batch = [q.popleft() for _ in range(min(len(q), self._max_batch))]
                    self._in_flight += 1
            self._expire(expired)
            if batch is None:
                return
            self._start(batch, now)

    def _expire(self, items: list[_Pending[T]]) -> None:
        if not items:
            return
        with self._lock:
            self._expired += len(items)
        for p in items:
            p.ticket.set_exception(BatchExpired("deadline passed before the push was proposed"))

    def _start(self, batch: list[_Pending[T]], now: float) -> None:
        live = [p for p in batch if p.deadline > now]
        self._expire([p for p in batch if p.deadline <= now])
        if not live:
            with self._lock:
                self._in_flight -= 1
            return
        once = threading.Lock()

        def done(results: Sequence[Any] | None, error: BaseException | None) -> None:
            if once.acquire(blocking=False):
                self._finish(live, now, results, error)

        # Wait for the outcome until the latest deadline in the batch: an item is
        # answered (maybe "unavailable, retry") by then, give or take the linger.
        timeout = max(p.deadline for p in live) - now
        try:
            self._commit([p.item for p in live], timeout, done)
        except Exception as exc:  # refused at once: the whole batch shares it
            done(None, exc)

    def _finish(self, live: list[_Pending[T]], started: float,
                results: Sequence[Any] | None, error: BaseException | None) -> None:
        if error is None and (results is None or len(results) != len(live)):
            error = StoreError(f"commit returned {results!r} for {len(live)} items")
        with self._lock:
            self._in_flight -= 1
            if error is not None:
                self._failed_batches += 1
            else:
                self._batches += 1
                self._items += len(live)
                self._largest = max(self._largest, len(live))
                self._commit_s += self._clock() - started
                self._wait_s += sum(started - p.enqueued for p in live)
        if error is not None:
            log.info("group commit failed", extra={"fields": {
                "items": len(live), "error": type(error).__name__, "detail": str(error)}})
            for p in live:
                p.ticket.set_exception(error)
            return
        assert results is not None
        for p, r in zip(live, results, strict=True):
            if isinstance(r, BaseException):
                p.ticket.set_exception(r)
            else:
                p.ticket.set_result(r)

    # -- lifecycle and views -----------------------------------------------------------

    def close(self) -> None:
        """Stop taking items and fail what is queued. Batches being committed get their
        outcome from the store (closing it fails them)."""
        with self._lock:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
        for p in left:
            p.ticket.set_exception(CommitterClosed("shard is shutting down"))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batches": self._batches,
                "items": self._items,
                "mean_batch": round(self._items / self._batches, 2) if self._batches else 0.0,
                "largest_batch": self._largest,
                "commit_ms_mean": round(1000 * self._commit_s / self._batches, 2)
                if self._batches else 0.0,
                "queued_ms_mean": round(1000 * self._wait_s / self._items, 2)
                if self._items else 0.0,
                "expired": self._expired,
                "failed_batches": self._failed_batches,
                "queue_depth": len(self._queue),
                "in_flight": self._in_flight,
            }


class Inflight:
    """At most one pending push per device key; a retry of it shares its ticket.

    ``claim(key, seq, start)`` returns ``("new", ticket)`` after calling ``start()``
    to propose the push, ``("join", ticket)`` when the same (key, seq) is already
    pending, or ``("busy", None)`` when another push of that device is pending. The
    entry is removed when its ticket resolves.
    """

    def __init__(self) -> None:
        self._pending: dict[bytes, tuple[int, Ticket]] = {}
        self._lock = threading.Lock()

    def claim(self, key: bytes, seq: int, start: Callable[[], Ticket]
              ) -> tuple[Literal["new", "join", "busy"], Ticket | None]:
        with self._lock:
            held = self._pending.get(key)
            if held is not None:
                return ("join", held[1]) if held[0] == seq else ("busy", None)
            ticket = start()  # may raise: then nothing is recorded
            self._pending[key] = (seq, ticket)
        # Outside the lock: a ticket that is already done runs the callback right here.
        ticket.add_done_callback(lambda _t: self._release(key, seq))
        return "new", ticket

    def _release(self, key: bytes, seq: int) -> None:
        with self._lock:
            held = self._pending.get(key)
            if held is not None and held[0] == seq:
                del self._pending[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
