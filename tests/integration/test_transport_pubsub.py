"""Publisher / Subscriber over real nng sockets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from omega.errors import TransportError
from omega.transport import Publisher, Subscriber, TransportClosed, TransportSettings

SETTINGS = TransportSettings(reconnect_min_ms=10, reconnect_max_ms=100)


PROBE = b"probe"


def _connect(pub: Publisher, subs: list[Subscriber], timeout: float = 10.0) -> None:
    """Pub/sub drops messages until a subscriber is connected: probe until each has one."""
    deadline = time.monotonic() + timeout
    waiting = list(subs)
    while waiting:
        if time.monotonic() > deadline:
            raise AssertionError("subscriber never connected")
        pub.publish(PROBE)
        waiting = [s for s in waiting if s.recv(0.05) is None]


def _next(sub: Subscriber, n: int, timeout: float = 10.0) -> list[bytes]:
    """The next ``n`` messages that are not probes."""
    deadline = time.monotonic() + timeout
    got: list[bytes] = []
    while len(got) < n and time.monotonic() < deadline:
        m = sub.recv(0.1)
        if m is not None and not m.endswith(PROBE):
            got.append(m)
    return got


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_broadcast_reaches_every_subscriber_in_order(kind: str, tmp_path: Path) -> None:
    url = "tcp://127.0.0.1:0" if kind == "tcp" else f"ipc://{tmp_path}/pub.sock"
    with Publisher(url, SETTINGS) as pub:
        subs = [Subscriber(pub.address, SETTINGS) for _ in range(3)]
        try:
            _connect(pub, subs)
            for i in range(50):
                pub.publish(b"update:%d" % i)
            for s in subs:
                assert _next(s, 50) == [b"update:%d" % i for i in range(50)]
        finally:
            for s in subs:
                s.close()


def test_topics_filter_by_prefix() -> None:
    with Publisher("tcp://127.0.0.1:0", SETTINGS) as pub, \
            Subscriber(pub.address, SETTINGS, topics=[b"eu:"]) as eu, \
            Subscriber(pub.address, SETTINGS) as everything:
        _connect(pub, [everything])
        deadline = time.monotonic() + 10
        while eu.recv(0.05) is None:  # eu ignores the plain probes: probe it by topic
            assert time.monotonic() < deadline, "eu subscriber never connected"
            pub.publish(b"eu:" + PROBE)
        pub.publish(b"us:1")
        pub.publish(b"eu:2")
        assert _next(eu, 1) == [b"eu:2"]
        assert _next(everything, 2) == [b"us:1", b"eu:2"]
        assert _next(eu, 1, timeout=0.2) == []


def test_large_broadcast_needs_a_larger_subscriber_limit() -> None:
    big = b"g" * 200_000
    with Publisher("tcp://127.0.0.1:0", SETTINGS) as pub, \
            Subscriber(pub.address, SETTINGS, recv_max_size=1 << 20) as sub:
        _connect(pub, [sub])
        pub.publish(big)
        assert _next(sub, 1) == [big]
    with pytest.raises(ValueError):
        Subscriber("tcp://127.0.0.1:1", SETTINGS, recv_max_size=10)


def test_close_wakes_a_blocked_subscriber() -> None:
    with Publisher("tcp://127.0.0.1:0", SETTINGS) as pub:
        sub = Subscriber(pub.address, SETTINGS)
        outcome: list[object] = []

        def consume() -> None:
            try:
                outcome.append(sub.recv(30.0))
            except TransportError as exc:
                outcome.append(exc)

        t = threading.Thread(target=consume)
        t.start()
        t0 = time.monotonic()
        sub.close()
        t.join(10)
        assert not t.is_alive() and time.monotonic() - t0 < 5
        assert len(outcome) == 1 and isinstance(outcome[0], TransportClosed)
        with pytest.raises(TransportClosed):
            sub.recv(0.01)
    with pytest.raises(TransportClosed):
        pub.publish(b"after close")
