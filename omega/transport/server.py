"""RpcServer: a Rep0 socket served by a pool of (context, blocking thread) workers.

Thread model: one nng context per worker thread, each thread looping
recv → handler → send. Sharing one Rep0 socket between threads without contexts
corrupts nng's state; pynng's asyncio bridge measured 2–3x slower than blocking
threads here, so the hot path is blocking threads.

Deferred replies: a handler may return a ``Pending`` instead of bytes. The worker
then parks that request's context with the ``Pending`` and goes on receiving on
another context (one whose earlier reply nng has sent, or a new one); whoever
resolves the ``Pending`` sends the reply from its own thread, asynchronously (no
thread waits for it). So a request waiting for something else (a Raft commit)
holds no thread: ``workers`` bounds the requests being *handled* at once,
``max_pending`` the replies outstanding.

Close order (see docs/transport.md): set the closing flag; close the contexts of
the workers waiting in recv, which wakes them with ECLOSED (a worker in its handler
finishes it and sends the reply); join the workers with a deadline; wait, within the
same deadline, for the outstanding deferred replies; refuse later ones; close every
context (a reply still queued in nng ends with ECLOSED) and free its aio; only then
close the socket. Closing an nng socket while other threads are inside nng calls on
it is where the known close races live (nanomsg/nng#2110, #2238), so the socket
goes last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from omega.errors import OmegaError
from omega.reply import Handler, OnError, Pending, Reply
from omega.transport import _nng
from omega.transport.errors import TransportError
from omega.transport.guard import ConnectionGuard, ConnectionLimits, peer_host
from omega.transport_settings import TransportSettings

log = logging.getLogger("omega.transport")

OnFatal = Callable[[BaseException], None]

#: A worker waits for a request without a timeout: an idle TV must not wake (each
#: timed wait cost ~18 wake-ups a second, docs/benchmarks.md "TV idle"). close()
#: wakes a waiting worker by closing its context, and looks again every
#: ``_CLOSE_LOOK_S`` for one that began to wait just after it looked.
_RECV_WAIT_MS = -1  # nng's infinite duration
_CLOSE_LOOK_S = 0.05
#: How long a worker waiting for room for a deferred reply sleeps between looks.
_POLL_MS = 250
#: Contexts whose deferred reply may be done that a worker looks at before opening one.
_REUSE_LOOKS = 4


class _Worker:
    """Per-thread state; counters are per worker so no lock is needed to count."""

    __slots__ = ("channel", "errors", "handler_failures", "index", "receiving", "replies",
                 "requests", "thread")

    def __init__(self, index: int, channel: _nng.ServerContext) -> None:
        self.index = index
        self.channel = channel
        self.thread: threading.Thread | None = None
        self.receiving = False
        self.requests = 0
        self.replies = 0
        self.errors = 0
        self.handler_failures = 0


class RpcServer:
    """Serve ``handler(request_bytes) -> reply_bytes`` on ``listen``.

    ``listen``: ``tcp://host:port`` (port 0: the kernel picks; see ``address``),
    ``ipc:///path``, ``tls+tcp://host:port`` (certificates from ``settings.tls``).

    The handler returns the reply, or a ``Pending`` that it (or anything it handed
    it to) resolves later from any thread; the reply is then sent from that thread.
    At most ``settings.max_pending`` replies are outstanding: beyond that the
    workers stop receiving until some are answered.

    A handler exception is logged, counted (``handler_failures``) and answered with
    ``on_error(exc)``; the worker keeps serving. If ``on_error`` itself raises, or a
    worker thread dies any other way, the worker is gone: ``on_fatal(exc)`` is
    called (from that thread) so the owner can restart the server.
    """

    def __init__(self, listen: str, handler: Handler, settings: TransportSettings,
                 on_error: OnError, on_fatal: OnFatal | None = None, *,
                 name: str = "rpc") -> None:
        _nng.check_address(listen)
        self._url = listen
        self._handler = handler
        self._settings = settings
        self._on_error = on_error
        self._on_fatal = on_fatal
        self._name = name
        self._sock: Any = None
        self._listener: Any = None
        self._address = ""
        self._workers: list[_Worker] = []
        self._closing = False
        self._closed = False
        self._state_lock = threading.Lock()
        self._dead_workers = 0
        self._dropped_conns = 0
        # Deferred replies. Contexts handed to a Pending are "parked"; once answered
        # they are "sending" until nng is done with them, then taken by a worker again.
        self._parked: set[_nng.ServerContext] = set()
        self._sending: deque[_nng.ServerContext] = deque()
        self._pending_cond = threading.Condition(threading.Lock())
        self._sends_running = 0
        self._refuse_replies = False
        self._full_waiters = 0
        self._deferred = 0
        self._deferred_replies = 0
        self._deferred_errors = 0
        self._send_ms = _nng.to_ms(settings.send_timeout_s)
        # Connection limits (omega/transport/guard.py): pynng's pipe callbacks admit
        # or close each new pipe; a reaper thread closes idle ones.
        self.guard = ConnectionGuard(connection_limits(settings), name)
        self._pipes: dict[int, Any] = {}  # pipe id -> pynng Pipe, for the reaper
        self._track_idle = settings.idle_timeout_s > 0
        self._reaper_stop = threading.Event()
        #: Called (from the reaper) when the connection cap refused connections or the
        #: descriptors run low: the owner may give up a role it cannot serve.
        self.on_saturated: Callable[[str], None] | None = None
        self._fd_free = -1

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> RpcServer:
        """Bind, open one context per worker and start the worker threads."""
        with self._state_lock:
            if self._sock is not None or self._closed:
                raise TransportError("RpcServer.start() called twice or after close()")
            sock = _nng.open_socket("rep", self._settings, self._url)
            sock.add_pre_pipe_connect_cb(self._pipe_added)
            sock.add_post_pipe_remove_cb(self._pipe_removed)
            try:
                self._listener, self._address = _nng.listen(sock, self._url)
                with _nng.translated("open server contexts"):
                    self._workers = [_Worker(i, _nng.ServerContext(sock))
                                     for i in range(self._settings.workers)]
            except BaseException:
                for w in self._workers:
                    w.channel.close()
                _nng.close_socket(sock)
                raise
            self._sock = sock
            for w in self._workers:
                t = threading.Thread(target=self._run, args=(w,), daemon=True,
                                     name=f"omega-{self._name}-{w.index}")
                w.thread = t
                t.start()
            self._fd_free = _fds_free()
            threading.Thread(target=self._reap, daemon=True,
                             name=f"omega-{self._name}-reaper").start()
            _nng.track(self)
        log.info("rpc server listening", extra={"fields": {
            "server": self._name, "address": self._address, "workers": len(self._workers),
            "recv_max_size": sock.recv_max_size}})
        return self

    def close(self) -> None:
        """Stop serving; bounded by ``settings.close_timeout_s``. Idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            sock = self._sock
        if sock is None:
            return
        self._reaper_stop.set()
        deadline = time.monotonic() + self._settings.close_timeout_s
        with self._pending_cond:
            self._pending_cond.notify_all()  # a worker waiting for room to receive
        while True:
            for w in self._workers:
                if w.receiving:
                    w.channel.abort()  # wakes its recv; a busy worker finishes its reply
            alive = [w.thread for w in self._workers
                     if w.thread is not None and w.thread.is_alive()]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                break
            alive[0].join(min(_CLOSE_LOOK_S, left))
        stuck = [w.index for w in self._workers if w.thread is not None and w.thread.is_alive()]
        if stuck:
            # A handler is still running: closing the socket makes its reply fail
            # with ECLOSED, and the thread ends when the handler returns.
            log.warning("rpc server closing with busy workers", extra={"fields": {
                "server": self._name, "workers": stuck}})
        self._close_deferred(deadline)
        self._dropped_conns = self._read_drops()
        _nng.close_socket(sock)
        _nng.untrack(self)
        log.info("rpc server closed", extra={"fields": {"server": self._name, **self.stats()}})

    def __enter__(self) -> RpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- introspection -------------------------------------------------------------

    @property
    def address(self) -> str:
        """The bound address (with the real port when ``listen`` asked for port 0)."""
        if not self._address:
            raise TransportError("RpcServer.address is known after start()")
        return self._address

    @property
    def port(self) -> int | None:
        """The bound TCP port, or None for ipc:// and inproc://."""
        addr = self.address
        if addr.startswith(("tcp://", "tls+tcp://")):
            return int(addr.rsplit(":", 1)[1])
        return None

    @property
    def recv_max_size(self) -> int:
        """The limit read back from the socket (the setting, verified)."""
        if self._sock is None:
            raise TransportError("RpcServer.recv_max_size is known after start()")
        return int(self._sock.recv_max_size)

    def stats(self) -> dict[str, int]:
        """Counters: requests received, replies sent (at once or deferred), handler
        failures, transport errors, connections nng dropped (oversize frames land here),
        live and dead workers, deferred replies (all, outstanding now), contexts open."""
        ws = self._workers
        with self._pending_cond:
            parked = len(self._parked)
            deferred, deferred_replies = self._deferred, self._deferred_replies
            deferred_errors = self._deferred_errors
            contexts = len(ws) + parked + len(self._sending)
        return {
            "requests": sum(w.requests for w in ws),
            "replies": sum(w.replies for w in ws) + deferred_replies,
            "handler_failures": sum(w.handler_failures for w in ws),
            "errors": sum(w.errors for w in ws) + deferred_errors,
            "dropped_conns": self._read_drops() if not self._closed else self._dropped_conns,
            "workers_alive": sum(1 for w in ws if w.thread is not None and w.thread.is_alive()),
            "workers_dead": self._dead_workers,
            "deferred": deferred,
            "pending": parked,
            "contexts": contexts,
        }

    def connection_stats(self) -> dict[str, Any]:
        """The connection guard's counters, and the process's free descriptors."""
        return {**self.guard.stats(), "fds_free": self._fd_free}

    # --- connections ---------------------------------------------------------------

    def _pipe_added(self, pipe: Any) -> None:
        # nng's thread, for each handshaked connection, before it is used.
        try:
            address = peer_host(pipe.remote_address)
        except Exception:  # no address: no per-address limit
            address = None
        pid = pipe.id
        if self.guard.admit(pid, address) is not None:
            with contextlib.suppress(Exception):  # already gone
                pipe.close()
            return
        if self._track_idle:
            self._pipes[pid] = pipe

    def _pipe_removed(self, pipe: Any) -> None:
        pid = pipe.id
        self._pipes.pop(pid, None)
        self.guard.removed(pid)

    def _reap(self) -> None:
        """Close idle connections; watch the descriptors; report saturation."""
        period = _reap_period(self._settings.idle_timeout_s)
        while not self._reaper_stop.wait(period):
            for pid in self.guard.idle():
                pipe = self._pipes.pop(pid, None)
                self.guard.removed(pid)
                if pipe is not None:
                    with contextlib.suppress(Exception):  # closed meanwhile
                        pipe.close()
            self._fd_free = _fds_free()
            low = 0 <= self._fd_free < _headroom(self._settings) // 2
            hook = self.on_saturated
            if hook is not None and (low or self.guard.saturated(period * 2)):
                reason = "descriptors low" if low else "connection cap reached"
                try:
                    hook(reason)
                except Exception:
                    log.exception("rpc on_saturated hook failed", extra={"fields": {
                        "server": self._name}})

    def _read_drops(self) -> int:
        if self._listener is None:
            return 0
        try:
            return _nng.listener_drops(self._listener)
        except Exception:  # stats are best effort; never break stats() or close()
            return self._dropped_conns

    # --- the worker loop -----------------------------------------------------------

    def _run(self, w: _Worker) -> None:
        handler = self._handler
        on_error = self._on_error
        send_ms = self._send_ms
        max_pending = self._settings.max_pending
        track_idle = self._track_idle
        try:
            while not self._closing:
                ch = w.channel
                w.receiving = True
                rv, data = ch.recv(_RECV_WAIT_MS)
                w.receiving = False
                if rv != _nng.OK:
                    if rv in (_nng.ETIMEDOUT, _nng.ECANCELED):
                        continue
                    if rv == _nng.ECLOSED:
                        break
                    w.errors += 1
                    log.warning("rpc recv failed", extra={"fields": {
                        "server": self._name, "error": _nng.strerror(rv)}})
                    time.sleep(0.01)  # a persistent nng error must not spin a core
                    continue
                w.requests += 1
                if track_idle:
                    self.guard.seen(ch.pipe_id())
                try:
                    reply = handler(data)
                    if type(reply) is not bytes and not isinstance(reply, Pending):
                        reply = _as_bytes(reply)
                except Exception as exc:
                    w.handler_failures += 1
                    self._log_failure(exc)
                    reply = on_error(exc)  # if this raises, the worker dies: on_fatal
                if type(reply) is not bytes:  # a Pending: answered later, by its resolver
                    self._park(w, reply)
                    if len(self._parked) >= max_pending:
                        self._wait_for_room(max_pending)
                    continue
                rv = ch.send(reply, send_ms)
                if rv == _nng.OK:
                    w.replies += 1
                elif rv == _nng.ECLOSED or self._closing:
                    break
                else:
                    w.errors += 1
                    log.info("rpc reply not sent", extra={"fields": {
                        "server": self._name, "error": _nng.strerror(rv)}})
        # A worker must report its own death, whatever killed it (this thread is
        # ours, not an actor's, so nothing upstream would otherwise hear of it).
        except BaseException as exc:
            self._worker_died(w, exc)
        finally:
            w.receiving = False
            w.channel.close()

    # --- deferred replies ----------------------------------------------------------

    def _park(self, w: _Worker, pending: Reply) -> None:
        """Hand the worker's context to ``pending``; give the worker another one."""
        assert isinstance(pending, Pending)
        ctx = w.channel
        w.channel = self._take_context()
        with self._pending_cond:
            self._parked.add(ctx)
            self._deferred += 1
        pending.on_resolve(lambda reply: self._answer(ctx, reply))  # maybe right now

    def _take_context(self) -> _nng.ServerContext:
        """A context for a worker: one whose deferred reply nng has sent (the oldest
        first; a few are looked at), else a new one."""
        sending = self._sending
        for _ in range(min(_REUSE_LOOKS, len(sending))):
            try:
                ctx = sending.popleft()
            except IndexError:  # another worker took the last one
                break
            done, rv = ctx.idle()
            if done:
                if rv != _nng.OK:
                    self._reply_failed(rv)
                return ctx
            sending.append(ctx)  # still queued behind a slow connection
        with _nng.translated("open a server context"):
            return _nng.ServerContext(self._sock)

    def _answer(self, ctx: _nng.ServerContext, reply: bytes) -> None:
        """Send a deferred reply from the resolving thread; never raises."""
        cond = self._pending_cond
        with cond:
            self._parked.discard(ctx)
            if self._refuse_replies:  # closing: the context is closed with the socket
                return
            self._sends_running += 1
        rv = _nng.ENOMEM
        try:
            if type(reply) is not bytes:
                reply = _as_bytes(reply)
            rv = ctx.send_later(reply, self._send_ms)
        except Exception:
            log.exception("rpc deferred reply failed", extra={"fields": {"server": self._name}})
        finally:
            with cond:
                self._sends_running -= 1
                if rv == _nng.OK:
                    self._deferred_replies += 1
                else:
                    self._deferred_errors += 1
                self._sending.append(ctx)  # a worker takes it once nng is done (idle())
                if self._full_waiters or (self._refuse_replies and not self._sends_running):
                    cond.notify_all()

    def _reply_failed(self, rv: int) -> None:
        with self._pending_cond:
            self._deferred_replies -= 1
            self._deferred_errors += 1
        log.info("rpc reply not sent", extra={"fields": {
            "server": self._name, "error": _nng.strerror(rv)}})

    def _wait_for_room(self, max_pending: int) -> None:
        cond = self._pending_cond
        with cond:
            self._full_waiters += 1
            try:
                while len(self._parked) >= max_pending and not self._closing:
                    cond.wait(_POLL_MS / 1000)
            finally:
                self._full_waiters -= 1

    def _close_deferred(self, deadline: float) -> None:
        """Let outstanding deferred replies go out until ``deadline``, then close every
        context that is not a worker's own (each worker closed its own)."""
        cond = self._pending_cond
        with cond:
            while self._parked and time.monotonic() < deadline:
                self._full_waiters += 1
                try:
                    cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                finally:
                    self._full_waiters -= 1
            if self._parked:
                log.warning("rpc server closing with unanswered deferred replies",
                            extra={"fields": {"server": self._name,
                                              "pending": len(self._parked)}})
            self._refuse_replies = True
            while self._sends_running:
                cond.wait(0.05)
            rest = [*self._parked, *self._sending]
            self._parked.clear()
            self._sending.clear()
        for ctx in rest:
            ctx.close()

    def _log_failure(self, exc: Exception) -> None:
        if isinstance(exc, OmegaError):
            log.warning("rpc handler refused a request", extra={"fields": {
                "server": self._name, "error": repr(exc)}})
        else:
            log.error("rpc handler failed", exc_info=exc, extra={"fields": {
                "server": self._name}})

    def _worker_died(self, w: _Worker, exc: BaseException) -> None:
        with self._state_lock:
            self._dead_workers += 1
        log.error("rpc worker died", exc_info=exc, extra={"fields": {
            "server": self._name, "worker": w.index}})
        if self._on_fatal is not None:
            try:
                self._on_fatal(exc)
            except Exception:
                log.exception("rpc on_fatal hook failed", extra={"fields": {
                    "server": self._name}})


def _headroom(settings: TransportSettings) -> int:
    soft = _fd_limit()
    return min(settings.fd_headroom, soft // 4)


def _fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def connection_limits(settings: TransportSettings) -> ConnectionLimits:
    """The guard's limits: the total stays ``fd_headroom`` below the descriptor limit."""
    room = max(16, _fd_limit() - _headroom(settings))
    total = min(settings.max_conns, room) if settings.max_conns else room
    return ConnectionLimits(settings.max_conns_per_address, total, settings.idle_timeout_s)


def _fds_free() -> int:
    try:
        return _fd_limit() - len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: unknown
        return -1


def _reap_period(idle_timeout_s: float) -> float:
    return 5.0 if idle_timeout_s <= 0 else min(5.0, max(0.05, idle_timeout_s / 4))


def _as_bytes(reply: object) -> bytes:
    if isinstance(reply, bytearray | memoryview):
        return bytes(reply)
    raise TypeError(f"handler must return bytes, got {type(reply).__name__}")
