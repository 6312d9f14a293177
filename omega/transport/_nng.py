"""The one place that touches pynng: sockets, contexts, aios, TLS, stats, error mapping.

Why the hot path uses pynng's cffi layer (``pynng.lib``) instead of ``pynng.Context``:
``Context.recv/send`` allocate an aio, a ``Message`` and a lock per call, associate a
Python ``Pipe`` object under another lock, and take no per-call timeout; and a
``Context`` garbage-collected after its socket was closed raises ``pynng.Closed``
from ``__del__``. A ``Channel`` here is one context used by one thread: one
synchronous nng call per send or receive, timeouts as context options, stopped from
another thread by closing the context, freed explicitly. It uses less CPU per
request than pynng's ``Context`` path: compare ``omega-bytes`` with ``bare`` in
bench/transport.py (figures in docs/transport.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket as _socket
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

import pynng
from pynng import ffi, lib

from omega.transport.errors import AddressInUse, RequestTimeout, TransportClosed, TransportError
from omega.transport_settings import TlsSettings, TransportSettings

OK = 0
ETIMEDOUT: int = lib.NNG_ETIMEDOUT
ECLOSED: int = lib.NNG_ECLOSED
ECANCELED: int = lib.NNG_ECANCELED
ECONNRESET: int = lib.NNG_ECONNRESET
ECONNREFUSED: int = lib.NNG_ECONNREFUSED
ENOMEM: int = lib.NNG_ENOMEM
INFINITE_MS = -1

#: Messages queued per subscriber (publisher side) and in a subscriber (nng default: 16).
PUBSUB_QUEUE = 1024

SCHEMES = ("tcp://", "ipc://", "tls+tcp://", "inproc://")

#: pynng is untyped; its sockets are Any to mypy.
Socket: TypeAlias = Any


def strerror(rv: int) -> str:
    return str(ffi.string(lib.nng_strerror(rv)).decode())


def error_for(rv: int, what: str) -> TransportError:
    """Translate an nng error number into our error tree."""
    text = f"{what}: {strerror(rv)}"
    if rv == ETIMEDOUT:
        return RequestTimeout(text)
    if rv in (ECLOSED, ECANCELED):
        return TransportClosed(text)
    return TransportError(text)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn pynng exceptions raised by socket set-up calls into TransportError."""
    try:
        yield
    except pynng.AddressInUse as exc:
        raise AddressInUse(f"{what}: {exc}") from exc
    except pynng.Timeout as exc:
        raise RequestTimeout(f"{what}: {exc}") from exc
    except pynng.Closed as exc:
        raise TransportClosed(f"{what}: {exc}") from exc
    except pynng.NNGException as exc:
        raise TransportError(f"{what}: {exc}") from exc
    except (ValueError, OSError) as exc:  # bad TLS material, unreadable files
        raise TransportError(f"{what}: {exc}") from exc


def check_address(url: str) -> None:
    if not url.startswith(SCHEMES):
        raise TransportError(f"unsupported address {url!r}: must start with one of "
                             f"{', '.join(SCHEMES)}")


def to_ms(seconds: float) -> int:
    """nng durations are whole milliseconds; never round a positive wait down to 0."""
    return max(1, round(seconds * 1000))


# --- open objects are closed at exit, before pynng's own atexit runs nng_fini ------

_open: weakref.WeakSet[Any] = weakref.WeakSet()
_open_lock = threading.Lock()


def track(obj: Any) -> None:
    """Remember an open server/client so interpreter exit closes it in a safe order."""
    with _open_lock:
        _open.add(obj)


def untrack(obj: Any) -> None:
    with _open_lock:
        _open.discard(obj)


@atexit.register  # registered after pynng's (imported above), so it runs before it
def _close_all() -> None:
    with _open_lock:
        objs = list(_open)
    for obj in objs:
        with contextlib.suppress(Exception):
            obj.close()


# --- sockets -----------------------------------------------------------------------


def _apply_common(sock: Socket, settings: TransportSettings, recv_max_size: int) -> None:
    sock.recv_max_size = recv_max_size
    sock.reconnect_time_min = settings.reconnect_min_ms
    sock.reconnect_time_max = settings.reconnect_max_ms
    # pynng ignores the return code of size/ms setters: read the limit back.
    got = sock.recv_max_size
    if got != recv_max_size:
        raise TransportError(f"recv_max_size did not take: asked {recv_max_size}, socket has {got}")


def open_socket(kind: Literal["rep", "req", "pub", "sub"], settings: TransportSettings,
                url: str, *, recv_max_size: int | None = None) -> Socket:
    """An unconnected socket with our options (and TLS when ``url`` is tls+tcp://)."""
    check_address(url)
    limit = settings.recv_max_size if recv_max_size is None else recv_max_size
    with translated(f"open {kind} socket for {url}"):
        sock: Socket
        if kind == "rep":
            sock = pynng.Rep0()
        elif kind == "req":
            sock = pynng.Req0()
            # A Req0 socket resends an unanswered request every 60 s, forever, by
            # default; our client owns retries, so disable it (nng: <= 0 disables).
            sock.resend_time = INFINITE_MS
            if sock.resend_time != INFINITE_MS:
                sock.close()
                raise TransportError("could not disable Req0 resend")
        elif kind == "pub":
            sock = pynng.Pub0()
            # Pub0 never blocks: a burst longer than a subscriber's queue is dropped.
            sock.send_buffer_size = PUBSUB_QUEUE
        else:
            sock = pynng.Sub0()
            sock.recv_buffer_size = PUBSUB_QUEUE
        try:
            _apply_common(sock, settings, limit)
            if url.startswith("tls+tcp://"):
                sock.tls_config = tls_config(
                    settings.tls, "server" if kind in ("rep", "pub") else "client", url)
        except BaseException:
            sock.close()
            raise
    return sock


#: Mode of the socket file of every ``ipc://`` address we listen on.
IPC_MODE = 0o600


def listen(sock: Socket, url: str) -> tuple[Any, str]:
    """Listen on ``url``; return the listener and the address actually bound."""
    with translated(f"listen on {url}"):
        listener = sock.listen(url)
        got = listener.recv_max_size
        if got != sock.recv_max_size:
            raise TransportError(f"listener recv_max_size {got} != socket's {sock.recv_max_size}")
        if url.startswith("ipc://"):
            # Owner-only whatever the umask: a local socket may stop the node (control).
            os.chmod(url[len("ipc://"):], IPC_MODE)
        return listener, bound_address(listener, url)


def bound_address(listener: Any, url: str) -> str:
    """``url`` with a wildcard port (``:0``) replaced by the port the kernel chose."""
    if not url.startswith(("tcp://", "tls+tcp://")):
        return url
    addr = listener.local_address
    port = _socket.ntohs(addr.port)
    scheme, rest = url.split("://", 1)
    host = rest.rsplit(":", 1)[0]
    return f"{scheme}://{host}:{port}"


def dial(sock: Socket, url: str) -> None:
    """Start dialing in the background; nng reconnects with the socket's backoff."""
    with translated(f"dial {url}"):
        sock.dial(url, block=False)


def close_socket(sock: Socket) -> None:
    with contextlib.suppress(pynng.NNGException):
        sock.close()


def listener_drops(listener: Any) -> int:
    """Connections the listener closed on an error that is not a plain disconnect.

    nng counts a frame over ``recv_max_size`` (EMSGSIZE, the connection is closed)
    under the listener's ``other`` statistic; ``proto`` counts malformed SP headers.
    """
    snap = ffi.new("nng_stat **")
    if lib.nng_stats_get(snap) != OK:
        return 0
    try:
        node = lib.nng_stat_find_listener(snap[0], listener.listener)
        total = 0
        for name in (b"other", b"proto"):
            stat = lib.nng_stat_find(node, name) if node != ffi.NULL else ffi.NULL
            if stat != ffi.NULL:
                total += int(lib.nng_stat_value(stat))
        return total
    finally:
        lib.nng_stats_free(snap[0])


# --- TLS ---------------------------------------------------------------------------


def tls_config(tls: TlsSettings, mode: Literal["server", "client"], url: str) -> pynng.TLSConfig:
    def read(path: Path, key: str) -> str:
        try:
            return path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise TransportError(f"transport.tls.{key}: cannot read {path}: {exc}") from exc

    if mode == "server":
        if tls.cert_file is None or tls.key_file is None:
            raise TransportError("transport.tls.cert_file/key_file: a tls+tcp:// server needs both")
        cfg = pynng.TLSConfig(pynng.TLSConfig.MODE_SERVER,
                              own_cert_string=read(tls.cert_file, "cert_file"),
                              own_key_string=read(tls.key_file, "key_file"))
        if tls.ca_file is not None:
            cfg.set_ca_chain(read(tls.ca_file, "ca_file"))
            cfg.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
        else:
            cfg.set_auth_mode(pynng.TLSConfig.AUTH_MODE_NONE)
        return cfg
    if tls.ca_file is None:
        raise TransportError("transport.tls.ca_file: a tls+tcp:// client must verify the server")
    host = urlsplit(url.replace("tls+tcp://", "tcp://", 1)).hostname or ""
    cfg = pynng.TLSConfig(pynng.TLSConfig.MODE_CLIENT, server_name=tls.server_name or host,
                          ca_string=read(tls.ca_file, "ca_file"))
    cfg.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
    if tls.cert_file is not None and tls.key_file is not None:
        cfg.set_own_cert(read(tls.cert_file, "cert_file"), read(tls.key_file, "key_file"))
    return cfg


# --- channels ----------------------------------------------------------------------


class Channel:
    """One nng context (or the raw socket), used by one thread at a time.

    Each operation is a single synchronous nng call (``nng_ctx_recvmsg`` /
    ``nng_ctx_sendmsg``) with the context's own timeout options: every cffi call
    releases and re-takes the GIL, so fewer calls per request means less GIL
    ping-pong between worker threads (measured in docs/transport.md).

    Another thread stops a channel with ``abort()``, which closes the *context*
    (nng looks contexts up by id and reference-counts them, so this is safe at
    any moment): the pending operation ends with ECLOSED and later ones fail the
    same way. Cancelling an aio from another thread is not safe: an
    ``nng_aio_cancel`` that lands between two operations was seen (nng 1.11) to
    corrupt the next one (an early, empty completion, then an nng panic).
    """

    __slots__ = ("_ctx", "_msg", "_msgp", "_recv_ms", "_send_ms", "_use_ctx", "closed",
                 "sock")

    def __init__(self, sock: Socket, *, use_ctx: bool = True) -> None:
        self.sock = sock
        self._use_ctx = use_ctx
        self._msgp = ffi.new("nng_msg **")
        self._msg: Any = None  # last received message, reused for the reply
        self._recv_ms = -2  # NNG_DURATION_DEFAULT: not set by us yet
        self._send_ms = -2
        self._ctx: Any = None
        if use_ctx:
            ctxp = ffi.new("nng_ctx *")
            rv = lib.nng_ctx_open(ctxp, sock.socket)
            if rv != OK:
                raise error_for(rv, "open context")
            self._ctx = ctxp[0]
        self.closed = False

    def _set_timeout(self, name: bytes, ms: int) -> int:
        if self._use_ctx:
            return int(lib.nng_ctx_set_ms(self._ctx, name, ms))
        return int(lib.nng_socket_set_ms(self.sock.socket, name, ms))

    def recv(self, timeout_ms: int) -> tuple[int, bytes]:
        """Wait for one frame: ``(0, data)`` or ``(nng error, b"")``."""
        if timeout_ms != self._recv_ms:
            rv = self._set_timeout(b"recv-timeout", timeout_ms)
            if rv != OK:
                return rv, b""
            self._recv_ms = timeout_ms
        msgp = self._msgp
        if self._use_ctx:
            rv = lib.nng_ctx_recvmsg(self._ctx, msgp, 0)
        else:
            rv = lib.nng_recvmsg(self.sock.socket, msgp, 0)
        if rv != OK:
            return int(rv), b""
        msg = msgp[0]
        data = ffi.buffer(lib.nng_msg_body(msg), lib.nng_msg_len(msg))[:]
        if self._msg is not None:
            lib.nng_msg_free(self._msg)
        self._msg = msg
        return OK, data

    def pipe_id(self) -> int:
        """The id of the connection the last received frame came on (-1: none)."""
        msg = self._msg
        if msg is None:
            return -1
        return int(lib.nng_pipe_id(lib.nng_msg_get_pipe(msg)))

    def send(self, data: bytes, timeout_ms: int) -> int:
        """Send one frame: 0 or the nng error (the message is freed either way)."""
        if timeout_ms != self._send_ms:
            rv = self._set_timeout(b"send-timeout", timeout_ms)
            if rv != OK:
                return rv
            self._send_ms = timeout_ms
        rv, msg = self._reply_message(data)
        if msg is None:
            return rv
        if rv == OK:
            if self._use_ctx:
                rv = lib.nng_ctx_sendmsg(self._ctx, msg, 0)
            else:
                rv = lib.nng_sendmsg(self.sock.socket, msg, 0)
            if rv == OK:
                return OK  # nng owns the message now
        lib.nng_msg_free(msg)  # on failure the message is still ours
        return int(rv)

    def _reply_message(self, data: bytes) -> tuple[int, Any]:
        """(0 or the nng error, the message holding ``data`` or None): the retained
        request message is reused. A message returned with an error is the caller's
        to free."""
        msg = self._msg
        self._msg = None
        if msg is None:
            rv = lib.nng_msg_alloc(self._msgp, 0)
            if rv != OK:
                return int(rv), None
            msg = self._msgp[0]
        else:
            lib.nng_msg_clear(msg)
        return int(lib.nng_msg_append(msg, data, len(data))), msg

    def drop_message(self) -> None:
        """Free the retained request message (when no reply will be sent)."""
        if self._msg is not None:
            lib.nng_msg_free(self._msg)
            self._msg = None

    def abort(self) -> None:
        """From any thread: close the context so its pending operation ends (ECLOSED)."""
        if self._ctx is not None:
            lib.nng_ctx_close(self._ctx)  # ECLOSED if already closed: fine

    def close(self) -> None:
        """Free what the channel holds and close the context. Owning thread only."""
        if self.closed:
            return
        self.closed = True
        self.drop_message()
        if self._ctx is not None:
            lib.nng_ctx_close(self._ctx)


class ServerContext(Channel):
    """A server's context that can also be answered later, from any thread.

    A worker receives on it synchronously (``recv``). When the handler answers at
    once, the worker replies synchronously (``send``). When the handler defers its
    reply, the worker hands the context over and takes another one; whoever has
    the reply calls ``send_later``: one asynchronous ``nng_ctx_send`` on an aio that
    has no completion callback, so no thread waits for nng and nng calls back no
    Python. The caller keeps the context until ``idle()`` says that send is over
    (it frees the message if nng did not send it); only then is it received on
    again. Nothing cancels the aio: ``close()`` closes the context, which ends a
    queued send with ECLOSED, then waits for the aio and frees it.
    """

    __slots__ = ("_aio", "_aiop", "sending")

    def __init__(self, sock: Socket) -> None:
        super().__init__(sock)
        self._aiop = ffi.new("nng_aio **")
        self._aio: Any = None
        self.sending = False

    def send_later(self, data: bytes, timeout_ms: int) -> int:
        """Start sending ``data`` as the reply; 0, or the nng error if it could not start."""
        if self._aio is None:
            rv = lib.nng_aio_alloc(self._aiop, ffi.NULL, ffi.NULL)
            if rv != OK:
                return int(rv)
            self._aio = self._aiop[0]
            lib.nng_aio_set_timeout(self._aio, timeout_ms)
        rv, msg = self._reply_message(data)
        if msg is None:
            return rv
        if rv != OK:
            lib.nng_msg_free(msg)
            return rv
        lib.nng_aio_set_msg(self._aio, msg)
        self.sending = True
        lib.nng_ctx_send(self._ctx, self._aio)
        return OK

    def idle(self) -> tuple[bool, int]:
        """``(True, result)`` once no send is under way (result: 0 or the send's nng
        error, whose unsent message is freed here); ``(False, 0)`` while one is."""
        if not self.sending:
            return True, OK
        if lib.nng_aio_busy(self._aio):
            return False, OK
        self.sending = False
        rv = int(lib.nng_aio_result(self._aio))
        if rv != OK:
            self._free_unsent()
        return True, rv

    def _free_unsent(self) -> None:
        msg = lib.nng_aio_get_msg(self._aio)
        if msg != ffi.NULL:
            lib.nng_aio_set_msg(self._aio, ffi.NULL)
            lib.nng_msg_free(msg)

    def close(self) -> None:
        """Close the context (a queued send ends with ECLOSED), wait for the aio, free it."""
        if self.closed:
            return
        super().close()
        if self._aio is not None:
            lib.nng_aio_wait(self._aio)
            self._free_unsent()
            lib.nng_aio_free(self._aio)
            self._aio = None
        self.sending = False
