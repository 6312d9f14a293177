"""Rate limits: the replicated push check and the per-replica read limiter."""

from __future__ import annotations

import pytest

from omega.shard.ratelimit import KeyedLimiter, push_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_push_retry_after() -> None:
    assert push_retry_after(None, 5_000, 60_000) is None
    assert push_retry_after(0, 60_000, 60_000) is None
    assert push_retry_after(0, 59_000, 60_000) == pytest.approx(1.0)
    assert push_retry_after(10_000, 10_000, 60_000) == pytest.approx(60.0)
    # A clock stepped backwards does not shorten the wait beyond a full interval.
    assert push_retry_after(20_000, 10_000, 60_000) == pytest.approx(60.0)
    assert push_retry_after(10_000, 10_001, 0) is None


def test_keyed_limiter_rate_and_burst() -> None:
    clock = FakeClock()
    lim = KeyedLimiter(1.0, burst=3, clock=clock)
    assert [lim.acquire(b"a") for _ in range(3)] == [None, None, None]
    wait = lim.acquire(b"a")
    assert wait == pytest.approx(1.0)
    assert lim.acquire(b"b") is None  # keys are independent
    clock.t += 1.0
    assert lim.acquire(b"a") is None
    assert lim.acquire(b"a") is not None


def test_keyed_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    lim = KeyedLimiter(10.0, burst=1, max_keys=100, clock=clock)
    for i in range(1_000):
        lim.acquire(b"k%d" % i)
    assert len(lim) <= 100
    clock.t += 11.0
    lim.acquire(b"fresh")
    assert len(lim) == 1  # idle keys carry no debt and are forgotten


def test_keyed_limiter_zero_interval_never_limits() -> None:
    lim = KeyedLimiter(0.0)
    assert all(lim.acquire(b"a") is None for _ in range(100))
