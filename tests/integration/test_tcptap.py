"""The recording relay of the byte-capture tests (tests/tcptap.py), with real nng
sockets on both sides: it relays both ways, cuts SP messages, marks, bounds what it
keeps, and closes its threads."""

from __future__ import annotations

import threading

import pytest

from omega.protocol import Heartbeat, HeartbeatAck, decode, encode
from omega.transport import (
    Publisher,
    RpcClient,
    RpcServer,
    Subscriber,
    TransportError,
    TransportSettings,
)
from tests.nodeproc import wait_for
from tests.tcptap import IN, OUT, TcpTap, found

SETTINGS = TransportSettings(request_timeout_s=2.0, retries=0)


def _echo_server() -> RpcServer:
    def handle(frame: bytes) -> bytes:
        msg = decode(frame)
        assert isinstance(msg, Heartbeat)
        return encode(HeartbeatAck(msg.ts_ms))

    return RpcServer("tcp://127.0.0.1:0", handle, SETTINGS,
                     lambda exc: b"error", name="echo").start()


def _tap_threads(tap: TcpTap) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{tap.name}-")]


def test_relays_req_rep_and_cuts_the_messages() -> None:
    server = _echo_server()
    tap = TcpTap(server.address, name="tap-echo")
    try:
        with RpcClient(tap.address, SETTINGS) as client:
            first = Heartbeat("tv-tap-device-one", 1_700_000_000_000, 0)
            assert decode(client.request(encode(first))) == HeartbeatAck(1_700_000_000_000)
            mark = tap.mark()
            later = [Heartbeat("tv-tap-device-two", 1_700_000_000_000 + i, 0) for i in range(5)]
            for msg in later:
                reply = decode(client.request(encode(msg)))
                assert reply == HeartbeatAck(msg.ts_ms)
        ins = [decode(f.body) for f in tap.frames(IN)]
        outs = [decode(f.body) for f in tap.frames(OUT)]
        assert ins == [first, *later]  # the request id is cut off: bodies decode as sent
        assert outs == [HeartbeatAck(m.ts_ms) for m in [first, *later]]
        assert {f.protocol for f in tap.frames(IN)} == {0x30}  # REQ
        assert [decode(f.body) for f in tap.frames(IN, since=mark)] == later
        assert found([b"tv-tap-device-one", b"tv-tap-device-two", b"absent-needle"],
                     tap.received()) == [b"tv-tap-device-one", b"tv-tap-device-two"]
        assert found([b"tv-tap-device-one"], tap.received(since=mark)) == []
        assert found([b"tv-tap-device-one"], tap.sent()) == []  # the reply carries no id
        assert tap.bytes[IN] == sum(map(len, tap.received())) > 6 * 20
        assert tap.connections == 1 and not tap.overflowed
    finally:
        tap.close()
        server.close()
    assert not [t for t in _tap_threads(tap) if t.is_alive()]


def test_pub_sub_through_the_tap_and_the_bound() -> None:
    pub = Publisher("tcp://127.0.0.1:0", SETTINGS).start()
    tap = TcpTap(pub.address, name="tap-pub", limit=4096)
    sub = Subscriber(tap.address, SETTINGS)
    try:
        # A subscriber may miss what is published before it connected: publish until seen.
        wait_for(lambda: pub.publish(b"hello-subscriber") or sub.recv(0.05), 10,
                 "the subscriber connected through the tap")
        big = b"x" * 3000
        for _ in range(3):  # past the 4 KiB bound: still relayed, no longer recorded
            pub.publish(big)
        got = wait_for(lambda: sub.recv(0.1) == big and True, 10, "a big message relayed")
        assert got
        # The first big message can arrive before the next ones reach the tap: wait for them.
        assert wait_for(lambda: tap.overflowed, 10, "the tap past its bound")
        assert tap.bytes[OUT] > 4096 >= sum(map(len, tap.sent()))
        first = tap.frames(OUT)[0]
        assert first.body == b"hello-subscriber" and first.protocol == 0x20  # PUB
    finally:
        sub.close()
        tap.close()
        pub.close()
    assert not [t for t in _tap_threads(tap) if t.is_alive()]


def test_a_node_that_is_down_is_a_refused_connection() -> None:
    server = _echo_server()
    address = server.address
    server.close()
    with TcpTap(address, name="tap-down") as tap, \
            RpcClient(tap.address, TransportSettings(request_timeout_s=0.3, retries=0)) as c:
        with pytest.raises(TransportError):  # no answer: the tap drops the connection
            c.request(encode(Heartbeat("tv-tap-nobody", 1_700_000_000_000, 0)))
        assert tap.frames() == [] and tap.connections == 0
