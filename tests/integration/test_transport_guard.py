"""RpcServer's connection limits on real nng sockets: per address, total, idle close."""

from __future__ import annotations

import socket
import threading

from omega.transport import RpcClient, RpcServer, TransportSettings
from tests.nodeproc import wait_for

REQ0_HEADER = b"\x00SP\x00\x00\x30\x00\x00"


def echo(frame: bytes) -> bytes:
    return frame


def on_error(exc: BaseException) -> bytes:
    return b"error"


def handshake(port: int, source: str = "127.0.0.2") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(REQ0_HEADER)
    assert s.recv(8) == b"\x00SP\x00\x00\x31\x00\x00"  # the server's Rep0 header
    return s


def closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_per_address_cap_and_idle_close() -> None:
    settings = TransportSettings(max_conns_per_address=3, idle_timeout_s=0.5)
    with RpcServer("tcp://127.0.0.1:0", echo, settings, on_error) as srv:
        assert srv.port is not None
        held = [handshake(srv.port) for _ in range(5)]
        wait_for(lambda: sum(closed_by_peer(s) for s in held) == 2, 10, "2 refused")
        st = srv.connection_stats()
        assert (st["open"], st["busiest_address"], st["refused_per_address"]) == (3, 3, 2)
        # Another address is served meanwhile, and its connection stays while it talks.
        with RpcClient(f"tcp://127.0.0.1:{srv.port}", TransportSettings()) as client:
            assert client.request(b"hi", timeout_s=5) == b"hi"
            # The silent ones are closed once idle; a client that goes quiet too,
            # and nng's dialer reconnects for its next request.
            wait_for(lambda: all(closed_by_peer(s) for s in held), 10, "idle closed")
            wait_for(lambda: srv.connection_stats()["idle_closed"] >= 3, 10, "counted")
            assert client.request(b"again", timeout_s=5) == b"again"
        for s in held:
            s.close()


def test_total_cap_reports_saturation() -> None:
    settings = TransportSettings(max_conns=2, max_conns_per_address=0, idle_timeout_s=0.4)
    saturated = threading.Event()
    with RpcServer("tcp://127.0.0.1:0", echo, settings, on_error) as srv:
        srv.on_saturated = lambda reason: saturated.set()
        assert srv.port is not None
        held = [handshake(srv.port, "127.0.0.1") for _ in range(3)]
        wait_for(lambda: srv.connection_stats()["refused_total"] == 1, 10, "total refusal")
        assert saturated.wait(5)
        for s in held:
            s.close()
