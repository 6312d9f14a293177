"""ConnectionGuard: the bookkeeping behind the device port's connection limits."""

from __future__ import annotations

from omega.transport.guard import ConnectionGuard, ConnectionLimits


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def guard(per_address: int = 2, total: int = 4,
          idle: float = 10.0) -> tuple[ConnectionGuard, Clock]:
    clock = Clock()
    return ConnectionGuard(ConnectionLimits(per_address, total, idle), "t", clock=clock), clock


def test_per_address_cap_refuses_only_that_address() -> None:
    g, _ = guard()
    assert g.admit(1, "10.0.0.1") is None
    assert g.admit(2, "10.0.0.1") is None
    assert g.admit(3, "10.0.0.1") == "per_address"
    assert g.admit(4, "10.0.0.2") is None
    assert g.admit(5, None) is None  # not an IP peer: no per-address limit
    s = g.stats()
    assert (s["open"], s["addresses"], s["busiest_address"]) == (4, 2, 2)
    assert s["refused_per_address"] == 1
    g.removed(1)
    assert g.admit(6, "10.0.0.1") is None  # room again
    g.removed(3)  # never admitted: nothing changes
    assert g.stats()["open"] == 4


def test_total_cap_and_saturation() -> None:
    g, clock = guard(per_address=0, total=2)
    assert g.admit(1, "a") is None and g.admit(2, "b") is None
    assert not g.saturated(5)
    assert g.admit(3, "c") == "total"
    assert g.saturated(5)
    clock.t += 6
    assert not g.saturated(5)
    assert g.stats()["refused_total"] == 1


def test_idle_pipes_are_listed_once_seen_pipes_are_not() -> None:
    g, clock = guard(idle=10.0)
    g.admit(1, "a")
    g.admit(2, "b")
    clock.t += 6
    g.seen(2)
    clock.t += 5
    assert g.idle() == [1]
    assert g.stats()["idle_closed"] == 1
    never, _ = guard(idle=0)
    never.admit(1, "a")
    assert never.idle(1e9) == []
