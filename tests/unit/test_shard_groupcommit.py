"""Group committer: when batches go (idle, linger, size, pipeline), per-item outcomes,
failures, expiry, close, the one-shot ticket and the in-flight table.

The committer has no thread: these tests drive ``pump()`` themselves, with a fake
clock, and complete commits by hand — nothing waits on time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from omega.errors import StoreError
from omega.shard.groupcommit import (
    BatchExpired,
    CommitterClosed,
    DoneFn,
    GroupCommitter,
    Inflight,
    Ticket,
    TicketTimeout,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Commits:
    """A commit function that records batches; they complete when the test says so."""

    def __init__(self, *, auto: bool = False) -> None:
        self.auto = auto  # complete each batch at once (inside pump)
        self.batches: list[list[int]] = []
        self.timeouts: list[float] = []
        self.open: list[tuple[list[int], DoneFn]] = []
        self.refuse: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int], timeout_s: float, done: DoneFn) -> None:
        if self.refuse is not None:
            raise self.refuse
        with self.lock:
            self.batches.append(list(items))
            self.timeouts.append(timeout_s)
            self.open.append((list(items), done))
        if self.auto:
            self.complete()

    def complete(self, error: BaseException | None = None) -> None:
        """Finish the oldest open batch: item i → i * 10 (an exception for i < 0)."""
        with self.lock:
            items, done = self.open.pop(0)
        if error is not None:
            done(None, error)
        else:
            done([ValueError(f"odd {i}") if i < 0 else i * 10 for i in items], None)


def committer(commits: Commits, clock: Clock, **kw: Any) -> GroupCommitter[int]:
    wakes: list[int] = kw.pop("wakes", [])
    opts: dict[str, Any] = {"max_batch": 4, "max_delay_s": 0.005, "pipeline": 2, **kw}
    return GroupCommitter(commits, clock=clock, wake=lambda: wakes.append(1), **opts)


def test_an_idle_committer_proposes_a_lone_item_at_once() -> None:
    clock, commits, wakes = Clock(), Commits(auto=True), []
    gc = committer(commits, clock, wakes=wakes)
    t = gc.submit(7, clock.t + 3)
    assert wakes == [1]  # the driver is woken: nothing is being committed
    gc.pump()
    assert commits.batches == [[7]] and t.result(0) == 70
    assert commits.timeouts == [3.0]  # the outcome is awaited until the item's deadline


def test_while_a_batch_commits_items_linger_for_company() -> None:
    clock, commits, wakes = Clock(), Commits(), []
    gc = committer(commits, clock, wakes=wakes)
    first = gc.submit(0, clock.t + 30)
    gc.pump()
    tickets = [gc.submit(i, clock.t + 30) for i in (1, 2)]
    gc.pump()
    assert commits.batches == [[0]] and wakes == [1]  # 1, 2 linger (a batch is on its way)
    clock.t += 0.005  # the oldest waited max_delay: the second batch of the pipeline goes
    gc.pump()
    assert commits.batches == [[0], [1, 2]]
    more = [gc.submit(i, clock.t + 30) for i in range(3, 10)]
    clock.t += 1.0
    gc.pump()
    assert len(commits.batches) == 2  # pipeline full: nothing else goes, however old
    commits.complete()
    gc.pump()  # one slot free, and the queue is old: a full batch (max_batch 4) goes
    assert commits.batches[2] == [3, 4, 5, 6]
    assert first.result(0) == 0 and not tickets[0].done()
    commits.complete()
    commits.complete()
    gc.pump()
    assert commits.batches[3] == [7, 8, 9]  # nothing in flight: what is queued goes at once
    commits.complete()
    assert [t.result(0) for t in tickets + more] == [i * 10 for i in range(1, 10)]
    st = gc.stats()
    assert (st["batches"], st["items"], st["largest_batch"], st["in_flight"]) == (4, 10, 4, 0)


def test_a_full_batch_does_not_wait_for_the_linger() -> None:
    clock, commits, wakes = Clock(), Commits(), []
    gc = committer(commits, clock, wakes=wakes)
    gc.submit(0, clock.t + 30)
    gc.pump()
    for i in range(1, 5):
        gc.submit(i, clock.t + 30)
    assert wakes == [1, 1]  # woken again when a full batch is queued
    gc.pump()
    assert commits.batches == [[0], [1, 2, 3, 4]]


def test_per_item_errors_batch_failures_and_refusals() -> None:
    clock, commits = Clock(), Commits()
    gc = committer(commits, clock)
    bad, good = gc.submit(-1, clock.t + 30), gc.submit(3, clock.t + 30)
    gc.pump()
    commits.complete()
    with pytest.raises(ValueError, match="odd"):
        bad.result(0)
    assert good.result(0) == 30
    failed = gc.submit(4, clock.t + 30)
    gc.pump()
    commits.complete(StoreError("leader changed"))
    with pytest.raises(StoreError, match="leader changed"):
        failed.result(0)
    commits.refuse = StoreError("not leader")  # refused when proposed
    refused = gc.submit(5, clock.t + 30)
    gc.pump()
    with pytest.raises(StoreError, match="not leader"):
        refused.result(0)
    commits.refuse = None
    ok = gc.submit(6, clock.t + 30)
    gc.pump()  # the committer goes on after failures
    commits.complete()
    assert ok.result(0) == 60
    st = gc.stats()
    assert st["failed_batches"] == 2 and st["in_flight"] == 0


def test_expired_items_are_never_proposed() -> None:
    clock, commits = Clock(), Commits(auto=True)
    gc = committer(commits, clock)
    late = gc.submit(5, clock.t + 0.001)
    clock.t += 0.002
    gc.pump()
    with pytest.raises(BatchExpired):
        late.result(0)
    assert commits.batches == [] and gc.stats()["expired"] == 1


def test_close_fails_queued_items_and_refuses_new_ones() -> None:
    clock, commits = Clock(), Commits()
    gc = committer(commits, clock, pipeline=1)
    first = gc.submit(1, clock.t + 30)
    gc.pump()
    queued = gc.submit(2, clock.t + 30)
    gc.close()
    with pytest.raises(CommitterClosed):
        queued.result(0)
    with pytest.raises(CommitterClosed):
        gc.submit(3, clock.t + 30)
    commits.complete()  # the batch being committed still gets its outcome
    assert first.result(0) == 10
    gc.pump()  # a closed committer proposes nothing
    assert commits.batches == [[1]]


def test_many_threads_every_item_resolved_once() -> None:
    commits = Commits(auto=True)
    woken = threading.Event()
    stop = threading.Event()
    gc: GroupCommitter[int] = GroupCommitter(commits, max_batch=16, max_delay_s=0.001,
                                             pipeline=2, wake=woken.set)

    def driver() -> None:  # plays the Raft thread: pump when woken, and at each "tick"
        while not stop.is_set():
            woken.wait(0.01)
            woken.clear()
            gc.pump()

    results: dict[int, int] = {}
    lock = threading.Lock()

    def worker(base: int) -> None:
        for i in range(base, base + 50):
            r = gc.submit(i, 1e12).result(10)
            with lock:
                results[i] = r

    drv = threading.Thread(target=driver)
    drv.start()
    threads = [threading.Thread(target=worker, args=(t * 1000,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    drv.join(10)
    gc.close()
    assert len(results) == 400 and all(v == k * 10 for k, v in results.items())
    committed = [i for b in commits.batches for i in b]
    assert sorted(committed) == sorted(results)  # each exactly once


def test_ticket_callbacks_run_once_in_the_resolving_thread() -> None:
    t = Ticket()
    seen: list[tuple[str, Any]] = []
    t.add_done_callback(lambda x: seen.append(("first", x.outcome())))
    t.add_done_callback(lambda x: 1 / 0)  # a failing callback does not stop the others
    t.add_done_callback(lambda x: seen.append(("second", threading.current_thread().name)))
    with pytest.raises(TicketTimeout):
        t.result(0.001)
    resolver = threading.Thread(target=t.set_result, args=(7,), name="resolver")
    resolver.start()
    resolver.join(10)
    assert seen == [("first", (7, None)), ("second", "resolver")]
    assert not t.set_exception(ValueError("late"))  # resolved once
    assert t.result(0) == 7
    t.add_done_callback(lambda x: seen.append(("late", x.result(0))))  # runs at once
    assert seen[-1] == ("late", 7)
    failed = Ticket()
    failed.set_exception(StoreError("no"))
    with pytest.raises(StoreError, match="no"):
        failed.result(0)


def test_inflight_join_and_busy() -> None:
    table = Inflight()
    started: list[Ticket] = []

    def start() -> Ticket:
        f = Ticket()
        started.append(f)
        return f

    kind, fut = table.claim(b"dev", 5, start)
    assert kind == "new" and fut is started[0]
    assert table.claim(b"dev", 5, start) == ("join", fut)
    assert table.claim(b"dev", 6, start) == ("busy", None)
    assert len(started) == 1 and len(table) == 1
    fut.set_result("ok")
    assert len(table) == 0
    kind, _ = table.claim(b"dev", 6, start)
    assert kind == "new"


def test_inflight_start_failure_records_nothing() -> None:
    table = Inflight()

    def boom() -> Ticket:
        raise CommitterClosed("closing")

    with pytest.raises(CommitterClosed):
        table.claim(b"dev", 1, boom)
    assert len(table) == 0
