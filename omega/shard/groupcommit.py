"""Group commit: many accepted pushes ride in one Raft entry.

Request threads call ``GroupCommitter.submit(item, deadline)`` and block on the
returned future with their own deadline. Committer threads take what is queued —
up to ``max_batch`` items, lingering at most ``max_delay_s`` after the oldest one
arrived so that a quiet shard still answers promptly — and hand the batch to
``commit`` (for the shard: encode one Raft command, submit it, wait until it is
committed and applied). Each item's future then gets its own result, or the
batch's exception (not leader, leader changed, timeout): a push is acknowledged
only after the entry that carries it is applied.

With ``pipeline`` > 1 the next batch is collected and proposed while the previous
one is still being replicated; only one thread collects at a time, so batches do
not split each other.

``Inflight`` is the table that keeps one push per device in flight: a retry of
the same push joins the pending future instead of proposing it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
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


#: ``commit`` returns one entry per item: its result, or an exception for that item.
CommitFn = Callable[[Sequence[T]], Sequence[Any]]


@dataclass
class _Pending(Generic[T]):
    item: T
    future: Future[Any]
    deadline: float
    enqueued: float


class GroupCommitter(Generic[T]):
    """Batch items from many threads into one ``commit`` call at a time."""

    def __init__(self, commit: CommitFn[T], *, max_batch: int, max_delay_s: float,
                 pipeline: int = 1, max_queue: int = 100_000,
                 clock: Callable[[], float] = time.monotonic,
                 name: str = "omega-shard-commit") -> None:
        if max_batch < 1 or max_delay_s < 0 or pipeline < 1 or max_queue < 1:
            raise ValueError("max_batch >= 1, max_delay_s >= 0, pipeline >= 1, max_queue >= 1")
        self._commit = commit
        self._max_batch = max_batch
        self._max_delay = max_delay_s
        self._pipeline = pipeline
        self._max_queue = max_queue
        self._clock = clock
        self._name = name
        self._queue: deque[_Pending[T]] = deque()
        self._cond = threading.Condition()
        self._collect = threading.Lock()  # one collector at a time
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()
        self._batches = 0
        self._items = 0
        self._expired = 0
        self._failed_batches = 0
        self._largest = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._threads or self._closed:
                return
            for i in range(self._pipeline):
                t = threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
                self._threads.append(t)
        for t in self._threads:
            t.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking items; fail what is queued; wait for batches in flight."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for p in left:
            _fail(p.future, CommitterClosed("shard is shutting down"))
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    # -- producers -------------------------------------------------------------------

    def submit(self, item: T, deadline: float) -> Future[Any]:
        """Queue ``item``; its future resolves once the batch carrying it is committed."""
        fut: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise CommitterClosed("shard is shutting down")
            if len(self._queue) >= self._max_queue:
                raise BatchExpired("commit queue full")
            self._queue.append(_Pending(item, fut, deadline, self._clock()))
            n = len(self._queue)
            if n == 1 or n >= self._max_batch:
                self._cond.notify_all()
        return fut

    # -- committer threads -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._collect:
                batch = self._take()
            if batch is None:
                return
            self._commit_batch(batch)

    def _take(self) -> list[_Pending[T]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self._max_delay > 0:
                # Linger for company, but never past the oldest item's delay.
                end = self._queue[0].enqueued + self._max_delay
                while len(self._queue) < self._max_batch and not self._closed:
                    remaining = end - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._closed:
                    return None
            n = min(len(self._queue), self._max_batch)
            return [self._queue.popleft() for _ in range(n)]

    def _commit_batch(self, batch: list[_Pending[T]]) -> None:
        now = self._clock()
        live = [p for p in batch if p.deadline > now]
        for p in batch:
            if p.deadline <= now:
                _fail(p.future, BatchExpired("deadline passed before the push was proposed"))
        with self._stats_lock:
            self._expired += len(batch) - len(live)
        if not live:
            return
        try:
            results = self._commit([p.item for p in live])
            if len(results) != len(live):
                raise StoreError(f"commit returned {len(results)} results for {len(live)} items")
        except Exception as exc:  # the whole batch shares the outcome
            with self._stats_lock:
                self._failed_batches += 1
            log.info("group commit failed", extra={"fields": {
                "items": len(live), "error": type(exc).__name__, "detail": str(exc)}})
            for p in live:
                _fail(p.future, exc)
            return
        with self._stats_lock:
            self._batches += 1
            self._items += len(live)
            self._largest = max(self._largest, len(live))
        for p, r in zip(live, results, strict=True):
            if isinstance(r, BaseException):
                _fail(p.future, r)
            elif not p.future.done():
                p.future.set_result(r)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            depth = len(self._queue)
        with self._stats_lock:
            return {
                "batches": self._batches,
                "items": self._items,
                "mean_batch": round(self._items / self._batches, 2) if self._batches else 0.0,
                "largest_batch": self._largest,
                "expired": self._expired,
                "failed_batches": self._failed_batches,
                "queue_depth": depth,
            }


def _fail(fut: Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class Inflight:
    """At most one pending push per device key; a retry of it shares its future.

    ``claim(key, seq, start)`` returns ``("new", fut)`` after calling ``start()`` to
    propose the push, ``("join", fut)`` when the same (key, seq) is already pending,
    or ``("busy", None)`` when another push of that device is pending. The entry is
    removed when its future completes.
    """

    def __init__(self) -> None:
        self._pending: dict[bytes, tuple[int, Future[Any]]] = {}
        self._lock = threading.Lock()

    def claim(self, key: bytes, seq: int, start: Callable[[], Future[Any]]
              ) -> tuple[Literal["new", "join", "busy"], Future[Any] | None]:
        with self._lock:
            held = self._pending.get(key)
            if held is not None:
                return ("join", held[1]) if held[0] == seq else ("busy", None)
            fut = start()  # may raise: then nothing is recorded
            self._pending[key] = (seq, fut)
        # Outside the lock: a future that is already done runs the callback right here.
        fut.add_done_callback(lambda _f: self._release(key, seq))
        return "new", fut

    def _release(self, key: bytes, seq: int) -> None:
        with self._lock:
            held = self._pending.get(key)
            if held is not None and held[0] == seq:
                del self._pending[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
