"""Group committer: batching by size and delay, per-item outcomes, failures, in-flight table."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import pytest

from omega.errors import StoreError
from omega.shard.groupcommit import BatchExpired, CommitterClosed, GroupCommitter, Inflight


class Recorder:
    """A commit function that records batches; can be gated and made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: Exception | None = None

    def __call__(self, items: Sequence[int]) -> list[Any]:
        self.entered.set()
        assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.batches.append(list(items))
        return [ValueError(f"odd {i}") if i < 0 else i * 10 for i in items]


def far() -> float:
    return time.monotonic() + 30


def test_batches_up_to_max_batch_while_a_commit_is_in_flight() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=4, max_delay_s=0.0)
    gc.start()
    try:
        rec.gate.clear()
        first = gc.submit(0, far())
        assert rec.entered.wait(10)  # batch [0] is committing and holds the gate
        futs = [gc.submit(i, far()) for i in range(1, 10)]
        rec.gate.set()
        assert first.result(10) == 0
        assert [f.result(10) for f in futs] == [i * 10 for i in range(1, 10)]
        assert rec.batches[0] == [0]
        assert all(len(b) <= 4 for b in rec.batches)
        assert sorted(i for b in rec.batches for i in b) == list(range(10))
        assert len(rec.batches) <= 4  # 9 queued items went in batches, not one by one
        st = gc.stats()
        assert st["items"] == 10 and st["largest_batch"] == 4
    finally:
        gc.close()


def test_lingers_for_company_up_to_max_delay() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=3, max_delay_s=30.0)
    gc.start()
    try:
        futs = [gc.submit(i, far()) for i in range(3)]  # a full batch goes at once
        assert [f.result(10) for f in futs] == [0, 10, 20]
        assert rec.batches == [[0, 1, 2]]
    finally:
        gc.close()


def test_short_delay_commits_a_lone_item() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=100, max_delay_s=0.005)
    gc.start()
    try:
        assert gc.submit(7, far()).result(10) == 70
    finally:
        gc.close()


def test_per_item_errors_and_batch_failure() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=10, max_delay_s=0.0)
    gc.start()
    try:
        with pytest.raises(ValueError, match="odd"):
            gc.submit(-1, far()).result(10)
        rec.fail = StoreError("leader changed")
        f = gc.submit(3, far())
        with pytest.raises(StoreError, match="leader changed"):
            f.result(10)
        assert gc.stats()["failed_batches"] == 1
        rec.fail = None
        assert gc.submit(4, far()).result(10) == 40  # the committer survives a failure
    finally:
        gc.close()


def test_expired_items_are_never_proposed() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=10, max_delay_s=0.0)
    gc.start()
    try:
        with pytest.raises(BatchExpired):
            gc.submit(5, time.monotonic() - 1).result(10)
        assert all(5 not in b for b in rec.batches)
        assert gc.stats()["expired"] == 1
    finally:
        gc.close()


def test_close_fails_queued_items_and_refuses_new_ones() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=1, max_delay_s=0.0)
    gc.start()
    rec.gate.clear()
    first = gc.submit(1, far())
    assert rec.entered.wait(10)
    queued = gc.submit(2, far())
    closer = threading.Thread(target=gc.close)
    closer.start()
    with pytest.raises(CommitterClosed):
        queued.result(10)
    rec.gate.set()
    closer.join(10)
    assert first.result(10) == 10
    with pytest.raises(CommitterClosed):
        gc.submit(3, far())


def test_inflight_join_and_busy() -> None:
    table = Inflight()
    started: list[Future[Any]] = []

    def start() -> Future[Any]:
        f: Future[Any] = Future()
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

    def boom() -> Future[Any]:
        raise CommitterClosed("closing")

    with pytest.raises(CommitterClosed):
        table.claim(b"dev", 1, boom)
    assert len(table) == 0


def test_many_threads_every_item_resolved_once() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=16, max_delay_s=0.001, pipeline=2)
    gc.start()
    results: dict[int, int] = {}
    lock = threading.Lock()

    def worker(base: int) -> None:
        for i in range(base, base + 50):
            r = gc.submit(i, far()).result(10)
            with lock:
                results[i] = r

    threads = [threading.Thread(target=worker, args=(t * 1000,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    gc.close()
    assert len(results) == 400 and all(v == k * 10 for k, v in results.items())
    committed = [i for b in rec.batches for i in b]
    assert sorted(committed) == sorted(results)  # each exactly once
