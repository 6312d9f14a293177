"""RpcServer / RpcClient over real nng sockets on 127.0.0.1 and ipc:// (no mocks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from omega.errors import OmegaError, ProtocolError, RequestTimeout, TransportError
from omega.schema import SettingError, load
from omega.transport import (
    AddressInUse,
    InMemoryRequester,
    Pending,
    Reply,
    Requester,
    RpcClient,
    RpcServer,
    TransportClosed,
    TransportSettings,
)
from omega.waiting import wait_for

FAST = TransportSettings(workers=4, request_timeout_s=3.0, retries=0, send_timeout_s=2.0,
                         reconnect_min_ms=10, reconnect_max_ms=200, close_timeout_s=3.0,
                         retry_backoff_s=0.01, retry_backoff_max_s=0.05)


def on_error(exc: BaseException) -> bytes:
    code = exc.code if isinstance(exc, ProtocolError) else "internal"
    return b"ERR:" + code.encode()


def echo(data: bytes) -> bytes:
    return b"re:" + data


@pytest.fixture(params=["tcp", "ipc"])
def listen_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "tcp":
        return "tcp://127.0.0.1:0"
    return f"ipc://{tmp_path}/rpc.sock"


@pytest.fixture
def closer() -> Iterator[list[RpcServer | RpcClient]]:
    """Close what a test opened even when it fails (clients first, then servers)."""
    opened: list[RpcServer | RpcClient] = []
    yield opened
    for obj in sorted(opened, key=lambda o: isinstance(o, RpcServer)):
        obj.close()


def serve(closer: list[RpcServer | RpcClient], url: str, handler: Callable[[bytes], Reply],
          settings: TransportSettings = FAST, **kw: object) -> RpcServer:
    srv = RpcServer(url, handler, settings, on_error, **kw).start()  # type: ignore[arg-type]
    closer.append(srv)
    return srv


def client(closer: list[RpcServer | RpcClient], dial: str | list[str],
           settings: TransportSettings = FAST) -> RpcClient:
    c = RpcClient(dial, settings)
    closer.append(c)
    return c


# --- basics ----------------------------------------------------------------------------


def test_round_trip_and_counters(listen_url: str, closer: list[RpcServer | RpcClient]) -> None:
    srv = serve(closer, listen_url, echo)
    c = client(closer, srv.address)
    assert c.request(b"hello") == b"re:hello"
    assert c.request(b"x" * 5000) == b"re:" + b"x" * 5000
    assert c.request(b"") == b"re:"
    # A worker counts its reply after the send returns, maybe after the client has it.
    wait_for(lambda: srv.stats()["replies"] == 3, 10.0, what="replies counted")
    s = srv.stats()
    assert (s["requests"], s["handler_failures"], s["errors"]) == (3, 0, 0)
    assert s["workers_alive"] == FAST.workers
    assert c.stats()["replies"] == 3


def test_bound_port_and_recv_max_size_read_back(closer: list[RpcServer | RpcClient]) -> None:
    settings = replace(FAST, recv_max_size=12_345)
    srv = serve(closer, "tcp://127.0.0.1:0", echo, settings)
    assert srv.port is not None and srv.port > 0
    assert srv.address == f"tcp://127.0.0.1:{srv.port}"
    assert srv.recv_max_size == 12_345
    # The reported address is dialable.
    assert client(closer, srv.address).request(b"p") == b"re:p"


def test_ipc_address_has_no_port(tmp_path: Path, closer: list[RpcServer | RpcClient]) -> None:
    srv = serve(closer, f"ipc://{tmp_path}/a.sock", echo)
    assert srv.port is None
    assert srv.address == f"ipc://{tmp_path}/a.sock"


def test_bad_addresses_are_typed_errors(closer: list[RpcServer | RpcClient]) -> None:
    with pytest.raises(TransportError, match="unsupported address"):
        RpcServer("http://127.0.0.1:1", echo, FAST, on_error)
    with pytest.raises(TransportError, match="unsupported address"):
        RpcClient(["tcp://127.0.0.1:1", "udp://x"], FAST)
    with pytest.raises(TransportError, match="at least one endpoint"):
        RpcClient([], FAST)
    srv = serve(closer, "tcp://127.0.0.1:0", echo)
    with pytest.raises(AddressInUse):
        RpcServer(srv.address, echo, FAST, on_error).start()
    # The failed bind left the first server working.
    assert client(closer, srv.address).request(b"still") == b"re:still"


def test_start_twice_and_close_twice(closer: list[RpcServer | RpcClient]) -> None:
    srv = serve(closer, "tcp://127.0.0.1:0", echo)
    with pytest.raises(TransportError, match="twice"):
        srv.start()
    srv.close()
    srv.close()
    with pytest.raises(TransportError):
        srv.start()


def test_many_concurrent_clients(listen_url: str, closer: list[RpcServer | RpcClient]) -> None:
    srv = serve(closer, listen_url, lambda b: b[::-1])
    shared = client(closer, srv.address)
    own = [client(closer, srv.address) for _ in range(4)]
    n_threads, per_thread = 12, 40
    wrong: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        c = shared if i % 3 else own[i % 4]
        try:
            for j in range(per_thread):
                req = f"{i}:{j}:".encode() * (1 + j % 7)
                rep = c.request(req)
                if rep != req[::-1]:
                    wrong.append((req, rep))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and wrong == []
    wait_for(lambda: srv.stats()["replies"] == n_threads * per_thread, 10.0, what="replies counted")
    assert shared.stats()["in_flight"] == 0


# --- failures on the server side ----------------------------------------------------------


def test_handler_exception_answered_with_on_error(closer: list[RpcServer | RpcClient]) -> None:
    def handler(data: bytes) -> bytes:
        if data == b"bug":
            raise KeyError("boom")
        if data == b"bad":
            raise ProtocolError("nope", code="bad_request")
        return echo(data)

    srv = serve(closer, "tcp://127.0.0.1:0", handler)
    c = client(closer, srv.address)
    assert c.request(b"bug") == b"ERR:internal"
    assert c.request(b"bad") == b"ERR:bad_request"
    assert c.request(b"ok") == b"re:ok"
    wait_for(lambda: srv.stats()["replies"] == 3, 10.0, what="replies counted")
    s = srv.stats()
    assert s["handler_failures"] == 2
    assert s["workers_alive"] == FAST.workers and s["workers_dead"] == 0


def test_handler_returning_non_bytes_is_a_handler_failure(
        closer: list[RpcServer | RpcClient]) -> None:
    srv = serve(closer, "tcp://127.0.0.1:0", lambda b: "text")  # type: ignore[arg-type,return-value]
    c = client(closer, srv.address)
    assert c.request(b"x") == b"ERR:internal"
    assert srv.stats()["handler_failures"] == 1


def test_oversized_request_never_reaches_handler(closer: list[RpcServer | RpcClient]) -> None:
    settings = replace(FAST, recv_max_size=4096)
    seen: list[int] = []

    def handler(data: bytes) -> bytes:
        seen.append(len(data))
        return b"ok"

    srv = serve(closer, "tcp://127.0.0.1:0", handler, settings)
    c = client(closer, srv.address)
    assert c.request(b"a" * 4000) == b"ok"
    # nng drops the frame and the connection; with Req0 resend off the client hears
    # of it at once (connection reset) instead of waiting for its timeout.
    with pytest.raises(TransportError) as info:
        c.request(b"b" * 8192)
    assert not isinstance(info.value, RequestTimeout)
    wait_for(lambda: srv.stats()["dropped_conns"] >= 1, 10.0, what="dropped connection counted")
    # The server keeps serving, and the client reconnects by itself.
    assert c.request(b"c" * 100) == b"ok"
    assert seen == [4000, 100]
    assert srv.stats()["handler_failures"] == 0


def test_worker_death_calls_on_fatal_and_others_serve(
        closer: list[RpcServer | RpcClient]) -> None:
    class Fatal(BaseException):
        pass

    fatal: list[BaseException] = []

    def handler(data: bytes) -> bytes:
        if data == b"die":
            raise Fatal("thread killer")
        return echo(data)

    srv = serve(closer, "tcp://127.0.0.1:0", handler, on_fatal=fatal.append)
    c = client(closer, srv.address)
    with pytest.raises(RequestTimeout):
        c.request(b"die", timeout_s=0.3)
    wait_for(lambda: len(fatal) == 1, 10.0, what="on_fatal")
    assert isinstance(fatal[0], Fatal)
    s = srv.stats()
    assert s["workers_dead"] == 1 and s["workers_alive"] == FAST.workers - 1
    assert c.request(b"alive") == b"re:alive"


def test_on_error_raising_kills_only_that_worker(closer: list[RpcServer | RpcClient]) -> None:
    fatal: list[BaseException] = []

    def bad_on_error(exc: BaseException) -> bytes:
        raise RuntimeError("on_error is broken")

    def handler(data: bytes) -> bytes:
        if data == b"x":
            raise ValueError("x")
        return echo(data)

    srv = RpcServer("tcp://127.0.0.1:0", handler, FAST, bad_on_error, fatal.append).start()
    closer.append(srv)
    c = client(closer, srv.address)
    with pytest.raises(RequestTimeout):
        c.request(b"x", timeout_s=0.3)
    wait_for(lambda: len(fatal) == 1, 10.0, what="on_fatal")
    assert isinstance(fatal[0], RuntimeError)
    assert c.request(b"y") == b"re:y"


# --- timeouts, retries, failover ------------------------------------------------------------


def test_timeout_against_silent_server_is_bounded(closer: list[RpcServer | RpcClient]) -> None:
    gate = threading.Event()
    calls: list[bytes] = []

    def handler(data: bytes) -> bytes:
        calls.append(data)
        gate.wait(20)
        return b"late:" + data

    srv = serve(closer, "tcp://127.0.0.1:0", handler)
    c = client(closer, srv.address, replace(FAST, retries=1))
    t0 = time.monotonic()
    try:
        with pytest.raises(RequestTimeout, match="gave up after 2 attempts"):
            c.request(b"q", timeout_s=0.3)
        elapsed = time.monotonic() - t0
        assert 0.6 <= elapsed < 10
        # Req0 resend is off: each attempt reached the server exactly once.
        wait_for(lambda: len(calls) == 2, 10.0, what="two attempts")
        assert c.stats()["timeouts"] == 2
    finally:
        gate.set()
    # The late replies to b"q" are discarded; the next request gets its own answer.
    assert c.request(b"again") == b"late:again"
    assert calls == [b"q", b"q", b"again"]


def test_retry_reaches_a_restarted_server(closer: list[RpcServer | RpcClient]) -> None:
    srv = serve(closer, "tcp://127.0.0.1:0", echo)
    addr = srv.address
    settings = replace(FAST, retries=8, send_timeout_s=0.2, retry_backoff_s=0.02,
                       retry_backoff_max_s=0.2)
    c = client(closer, addr, settings)
    assert c.request(b"before") == b"re:before"
    srv.close()
    restarted: list[RpcServer] = []

    def restart() -> None:
        wait_for(lambda: c.stats()["attempt_failures"] >= 1, 10.0, what="a failed attempt")
        restarted.append(serve(closer, addr, lambda b: b"new:" + b))

    t = threading.Thread(target=restart)
    t.start()
    try:
        assert c.request(b"after") == b"new:after"
    finally:
        t.join(20)
    assert restarted and c.stats()["attempt_failures"] >= 1


def test_no_server_gives_transport_error(closer: list[RpcServer | RpcClient]) -> None:
    probe = serve(closer, "tcp://127.0.0.1:0", echo)
    addr = probe.address
    probe.close()
    c = client(closer, addr, replace(FAST, retries=1, send_timeout_s=0.2))
    with pytest.raises(TransportError, match="no connection") as info:
        c.request(b"x", timeout_s=1.0)
    assert not isinstance(info.value, RequestTimeout)


def test_failover_to_next_endpoint_and_prefer(tmp_path: Path,
                                              closer: list[RpcServer | RpcClient]) -> None:
    dead = f"ipc://{tmp_path}/dead.sock"
    a = serve(closer, f"ipc://{tmp_path}/a.sock", lambda b: b"A")
    b = serve(closer, f"ipc://{tmp_path}/b.sock", lambda b: b"B")
    c = client(closer, [dead, a.address], replace(FAST, retries=2, send_timeout_s=0.2))
    assert c.current == dead
    assert c.request(b"x") == b"A"
    assert c.current == a.address  # sticky after failover
    c.prefer(b.address)  # e.g. the leader named by a not_leader reply
    assert c.endpoints == (dead, a.address, b.address)
    assert c.request(b"x") == b"B"
    c.prefer(a.address)
    assert c.request(b"x") == b"A"


# --- close while busy ----------------------------------------------------------------------


def test_server_close_with_requests_in_flight_is_bounded(
        closer: list[RpcServer | RpcClient]) -> None:
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def handler(data: bytes) -> bytes:
        if data == b"slow":
            entered.release()
            gate.wait(20)
        return echo(data)

    settings = replace(FAST, close_timeout_s=0.5)
    srv = serve(closer, "tcp://127.0.0.1:0", handler, settings)
    c = client(closer, srv.address)
    outcomes: list[object] = []

    def call(data: bytes) -> None:
        try:
            outcomes.append(c.request(data, timeout_s=5))
        except TransportError as exc:
            outcomes.append(exc)

    slow = [threading.Thread(target=call, args=(b"slow",)) for _ in range(2)]
    for t in slow:
        t.start()
    for _ in slow:
        assert entered.acquire(timeout=10)
    t0 = time.monotonic()
    srv.close()  # two workers are stuck in the handler, two wait in recv
    assert time.monotonic() - t0 < 5
    assert srv.stats()["workers_alive"] == 2
    gate.set()
    for t in slow:
        t.join(15)
    assert not any(t.is_alive() for t in slow)
    # Replies to a closed socket are lost: the callers got an error, not a hang.
    assert len(outcomes) == 2 and all(isinstance(o, TransportError) for o in outcomes)
    wait_for(lambda: srv.stats()["workers_alive"] == 0, 10.0, what="workers gone")


def test_graceful_close_finishes_running_handler(closer: list[RpcServer | RpcClient]) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def handler(data: bytes) -> bytes:
        entered.set()
        gate.wait(20)
        return echo(data)

    srv = serve(closer, "tcp://127.0.0.1:0", handler)
    c = client(closer, srv.address)
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(c.request(b"job", timeout_s=10)))
    t.start()
    assert entered.wait(10)
    closing = threading.Thread(target=srv.close)
    closing.start()
    gate.set()  # the handler finishes within close_timeout_s: its reply still goes out
    closing.join(10)
    t.join(10)
    assert not closing.is_alive() and not t.is_alive()
    assert result == [b"re:job"]


def test_client_close_cancels_requests_in_flight(closer: list[RpcServer | RpcClient]) -> None:
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def handler(data: bytes) -> bytes:
        entered.release()
        gate.wait(20)
        return echo(data)

    srv = serve(closer, "tcp://127.0.0.1:0", handler)
    c = RpcClient(srv.address, replace(FAST, retries=3))
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(c.request(b"w", timeout_s=15))
        except TransportError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in threads:
        assert entered.acquire(timeout=10)
    t0 = time.monotonic()
    c.close()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5  # not the 15 s request timeout
    assert len(outcomes) == 3 and all(isinstance(o, TransportClosed) for o in outcomes)
    with pytest.raises(TransportClosed):
        c.request(b"after close")
    gate.set()
    c.close()  # idempotent


# --- deferred replies -----------------------------------------------------------------------


class Deferring:
    """A handler that answers every request later: it keeps a ``Pending`` per request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[tuple[bytes, Pending]] = []

    def __call__(self, data: bytes) -> Reply:
        reply = Pending()
        with self.lock:
            self.pending.append((data, reply))
        return reply

    def count(self) -> int:
        with self.lock:
            return len(self.pending)

    def take(self) -> list[tuple[bytes, Pending]]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken


def _calls(c: RpcClient, payloads: list[bytes], timeout_s: float = 10
           ) -> tuple[list[threading.Thread], dict[bytes, object]]:
    outcomes: dict[bytes, object] = {}

    def call(data: bytes) -> None:
        try:
            outcomes[data] = c.request(data, timeout_s=timeout_s)
        except TransportError as exc:
            outcomes[data] = exc

    threads = [threading.Thread(target=call, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    return threads, outcomes


def test_deferred_replies_hold_no_worker(listen_url: str,
                                         closer: list[RpcServer | RpcClient]) -> None:
    handler = Deferring()
    srv = serve(closer, listen_url, handler, replace(FAST, workers=1))
    c = client(closer, srv.address)
    payloads = [b"q%d" % i for i in range(20)]
    threads, outcomes = _calls(c, payloads)
    # One worker received all 20 while none was answered: a pending reply holds no thread.
    wait_for(lambda: handler.count() == 20, 10.0, what="20 requests deferred")
    assert srv.stats()["pending"] == 20
    taken = handler.take()

    def resolve_all() -> None:  # from another thread, in reverse order
        for data, reply in reversed(taken):
            assert reply.resolve(b"later:" + data)

    resolver = threading.Thread(target=resolve_all)
    resolver.start()
    resolver.join(10)
    for t in threads:
        t.join(10)
    assert outcomes == {p: b"later:" + p for p in payloads}
    assert not taken[0][1].resolve(b"twice")  # a reply is given once
    wait_for(lambda: srv.stats()["replies"] == 20, 10.0, what="replies counted")
    s = srv.stats()
    assert (s["deferred"], s["pending"], s["errors"], s["workers_alive"]) == (20, 0, 0, 1)
    assert s["contexts"] <= 21  # the worker's own and one per reply outstanding at once


def test_deferred_reply_already_resolved_and_mixed_with_direct_ones(
        closer: list[RpcServer | RpcClient]) -> None:
    def handler(data: bytes) -> Reply:
        if data.startswith(b"now"):
            return echo(data)
        reply = Pending()
        reply.resolve(b"done:" + data)  # resolved before the server listens to it
        return reply

    srv = serve(closer, "tcp://127.0.0.1:0", handler, replace(FAST, workers=2))
    c = client(closer, srv.address)
    for i in range(50):  # contexts go round: parked, sent, reused
        assert c.request(b"later%d" % i) == b"done:later%d" % i
        assert c.request(b"now%d" % i) == b"re:now%d" % i
    wait_for(lambda: srv.stats()["replies"] == 100, 10.0, what="replies counted")
    s = srv.stats()
    assert s["deferred"] == 50 and s["pending"] == 0
    assert s["contexts"] <= 2 + 4  # the workers' own and a few reused ones


def test_max_pending_stops_receiving_until_a_reply_goes(
        closer: list[RpcServer | RpcClient]) -> None:
    handler = Deferring()
    srv = serve(closer, "tcp://127.0.0.1:0", handler, replace(FAST, workers=1, max_pending=2))
    c = client(closer, srv.address)
    threads, outcomes = _calls(c, [b"a", b"b", b"c"])
    wait_for(lambda: handler.count() == 2 and c.stats()["in_flight"] == 3, 10.0,
             what="two deferred, three sent")
    assert srv.stats()["requests"] == 2  # the worker waits for room, not for requests
    first = handler.take()
    first[0][1].resolve(b"1")
    wait_for(lambda: handler.count() == 1, 10.0, what="the third request received")
    for data, reply in [*first[1:], *handler.take()]:
        reply.resolve(b"x:" + data)
    for t in threads:
        t.join(10)
    answered_first = first[0][0]
    assert outcomes == {d: b"1" if d == answered_first else b"x:" + d for d in (b"a", b"b", b"c")}
    assert srv.stats()["pending"] == 0


def test_close_sends_replies_resolved_in_time_and_drops_later_ones(
        closer: list[RpcServer | RpcClient]) -> None:
    handler = Deferring()
    srv = serve(closer, "tcp://127.0.0.1:0", handler, replace(FAST, close_timeout_s=1.0))
    c = client(closer, srv.address)
    threads, outcomes = _calls(c, [b"kept", b"lost"], timeout_s=5)
    wait_for(lambda: handler.count() == 2, 10.0, what="two deferred")
    replies = dict(handler.take())
    closing = threading.Thread(target=srv.close)
    t0 = time.monotonic()
    closing.start()
    replies[b"kept"].resolve(b"ok")  # while close waits for outstanding replies
    closing.join(10)
    assert time.monotonic() - t0 < 5
    assert replies[b"lost"].resolve(b"too late")  # after close: dropped, no error
    for t in threads:
        t.join(10)
    assert outcomes[b"kept"] == b"ok"
    assert isinstance(outcomes[b"lost"], TransportError)


# --- settings -------------------------------------------------------------------------------


def test_settings_defaults_and_loading() -> None:
    s = load(TransportSettings, {})
    assert s == TransportSettings()
    assert s.workers == 8 and s.recv_max_size == 65536
    s = load(TransportSettings, {"workers": 2, "retries": 0,
                                 "tls": {"ca_file": "/etc/ca.pem", "server_name": "shard"}},
             "transport")
    assert s.workers == 2 and s.tls.ca_file == Path("/etc/ca.pem")


@pytest.mark.parametrize(("table", "key"), [
    ({"workers": 0}, "transport.workers"),
    ({"max_pending": 0}, "transport.max_pending"),
    ({"recv_max_size": 0}, "transport.recv_max_size"),
    ({"request_timeout_s": 0}, "transport.request_timeout_s"),
    ({"retries": 11}, "transport.retries"),
    ({"retry_backoff_s": 2.0, "retry_backoff_max_s": 1.0}, "transport.retry_backoff_max_s"),
    ({"reconnect_min_ms": 500, "reconnect_max_ms": 100}, "transport.reconnect_max_ms"),
    ({"workers": "8"}, "transport.workers"),
    ({"tls": {"cert_file": "/c.pem"}}, "transport.tls.cert_file"),
    ({"nope": 1}, "transport.nope"),
])
def test_settings_reject_bad_values(table: dict[str, object], key: str) -> None:
    with pytest.raises(SettingError) as info:
        load(TransportSettings, table, "transport")
    assert info.value.key == key


# --- the port and its in-memory twin behave alike ---------------------------------------------


@pytest.fixture(params=["nng", "memory"])
def requester(request: pytest.FixtureRequest,
              closer: list[RpcServer | RpcClient]) -> Iterator[Requester]:
    def handler(data: bytes) -> Reply:
        if data == b"fail":
            raise ProtocolError("refused", code="unauthorized")
        if data == b"later":  # answered from another thread
            reply = Pending()
            threading.Thread(target=reply.resolve, args=(b"re:later",)).start()
            return reply
        return echo(data)

    if request.param == "memory":
        r = InMemoryRequester(handler, on_error)
        yield r
        r.close()
    else:
        srv = serve(closer, "tcp://127.0.0.1:0", handler)
        yield client(closer, srv.address)


def test_requester_conformance(requester: Requester) -> None:
    assert requester.request(b"abc") == b"re:abc"
    assert requester.request(b"fail") == b"ERR:unauthorized"
    assert requester.request(b"later") == b"re:later"
    requester.close()
    with pytest.raises(TransportClosed):
        requester.request(b"abc")
    assert issubclass(TransportClosed, OmegaError)
