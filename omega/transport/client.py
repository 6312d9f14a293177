"""RpcClient: thread-safe request/reply over Req0, one endpoint at a time, with retries.

Thread model: one Req0 socket per endpoint (opened on first use, dialing in the
background; nng reconnects with ``reconnect_min_ms``..``reconnect_max_ms``). Each
concurrent call borrows a (context, aio) pair from the endpoint's pool and returns
it after, so N threads make N requests in flight on one connection without a lock
around the network wait. Measured against the alternatives in docs/transport.md.

Retry semantics: Req0's own resend is disabled (it would resend every 60 s,
forever); this client retries instead, ``settings.retries`` times, after an attempt
fails by timeout, connection reset/refusal, or no connection within
``send_timeout_s``, with exponential backoff and jitter, moving to the next endpoint
on each failure. A request may therefore reach a server more than once: handlers
must be idempotent (a Push carries its per-device sequence number for this).
An application error is a reply like any other: it is returned, never retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from omega.transport import _nng
from omega.transport.errors import RequestTimeout, TransportClosed, TransportError
from omega.transport_settings import TransportSettings

log = logging.getLogger("omega.transport")


class _Endpoint:
    __slots__ = ("idle", "sock", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.sock: Any = None
        self.idle: list[_nng.Channel] = []


class RpcClient:
    """``request(bytes) -> bytes`` against one or more equivalent endpoints.

    ``dial``: one address or several (tried in order; a failure moves to the next
    and the client stays there). ``prefer(address)`` moves it to a given one, e.g. the
    leader named in a ``not_leader`` reply.
    """

    def __init__(self, dial: str | Sequence[str], settings: TransportSettings, *,
                 name: str = "rpc", rng: Callable[[], float] = random.random) -> None:
        urls = [dial] if isinstance(dial, str) else list(dial)
        if not urls:
            raise TransportError("RpcClient needs at least one endpoint")
        for url in urls:
            _nng.check_address(url)
        self._settings = settings
        self._name = name
        self._rng = rng
        self._eps = [_Endpoint(u) for u in dict.fromkeys(urls)]
        self._current = 0
        self._lock = threading.Lock()
        self._idle_cv = threading.Condition(self._lock)
        self._busy: set[_nng.Channel] = set()
        self._closed = False
        self._closed_evt = threading.Event()
        self._counts = {"requests": 0, "replies": 0, "attempt_failures": 0, "timeouts": 0}
        _nng.track(self)

    # --- public --------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(ep.url for ep in self._eps)

    @property
    def current(self) -> str:
        """The endpoint the next request goes to first."""
        return self._eps[self._current].url

    def prefer(self, endpoint: str) -> None:
        """Send the next requests to ``endpoint`` first (added if it is new)."""
        _nng.check_address(endpoint)
        with self._lock:
            for i, ep in enumerate(self._eps):
                if ep.url == endpoint:
                    self._current = i
                    return
            self._eps.append(_Endpoint(endpoint))
            self._current = len(self._eps) - 1

    def request(self, data: bytes, timeout_s: float | None = None) -> bytes:
        """Send ``data``, return the reply.

        ``timeout_s`` (default ``settings.request_timeout_s``) bounds each attempt;
        the whole call is bounded by ``(retries + 1) * timeout_s`` plus backoff.
        Raises ``RequestTimeout`` if the last attempt timed out, ``TransportClosed``
        after ``close()``, ``TransportError`` for other delivery failures.
        """
        per_attempt = self._settings.request_timeout_s if timeout_s is None else timeout_s
        if not per_attempt > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        attempts = self._settings.retries + 1
        last: TransportError | None = None
        for attempt in range(attempts):
            index = self._current
            ep = self._eps[index]
            try:
                reply = self._attempt(ep, data, per_attempt, attempt == 0)
            except TransportClosed:
                raise
            except TransportError as exc:
                last = exc
                self._attempt_failed(index, exc)
                if attempt + 1 < attempts and self._closed_evt.wait(self._backoff(attempt)):
                    raise TransportClosed(f"client {self._name} closed during retry") from exc
                continue
            return reply
        assert last is not None
        raise type(last)(f"{last} (gave up after {attempts} attempts)") from last

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "in_flight": len(self._busy)}

    def close(self) -> None:
        """Cancel requests in flight (they raise TransportClosed), close the sockets.

        Bounded by ``settings.close_timeout_s``. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closed_evt.set()
        deadline = time.monotonic() + self._settings.close_timeout_s
        with self._idle_cv:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("rpc client closing with requests in flight", extra={
                        "fields": {"client": self._name, "in_flight": len(self._busy)}})
                    break
                # Closing a busy channel's context ends its wait at once (ECLOSED);
                # repeat each round for channels that became busy meanwhile.
                for ch in self._busy:
                    ch.abort()
                self._idle_cv.wait(min(left, 0.05))
            idle = [(ep, ep.idle) for ep in self._eps]
            for ep in self._eps:
                ep.idle = []
        for ep, channels in idle:
            for ch in channels:
                ch.close()
            if ep.sock is not None:
                _nng.close_socket(ep.sock)
        _nng.untrack(self)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------

    def _acquire(self, ep: _Endpoint, first: bool) -> _nng.Channel:
        # Counters ride on the lock taken here and in _release: one lock round trip
        # each way per attempt.
        with self._lock:
            if self._closed:
                raise TransportClosed(f"client {self._name} is closed")
            if first:
                self._counts["requests"] += 1
            if ep.idle:
                ch = ep.idle.pop()
                self._busy.add(ch)
                return ch
            if ep.sock is None:
                sock = _nng.open_socket("req", self._settings, ep.url)
                try:
                    _nng.dial(sock, ep.url)
                except BaseException:
                    _nng.close_socket(sock)
                    raise
                ep.sock = sock
            with _nng.translated(f"open context to {ep.url}"):
                ch = _nng.Channel(ep.sock)
            self._busy.add(ch)
            return ch

    def _release(self, ep: _Endpoint, ch: _nng.Channel, ok: bool) -> None:
        with self._lock:
            if ok:
                self._counts["replies"] += 1
            self._busy.discard(ch)
            if not self._closed:
                ep.idle.append(ch)
                return
            self._idle_cv.notify_all()
        ch.close()

    def _attempt(self, ep: _Endpoint, data: bytes, timeout_s: float, first: bool) -> bytes:
        ch = self._acquire(ep, first)
        ok = False
        try:
            deadline = time.monotonic() + timeout_s
            rv = ch.send(data, _nng.to_ms(min(self._settings.send_timeout_s, timeout_s)))
            if rv == _nng.ETIMEDOUT:
                raise TransportError(f"no connection to {ep.url} within "
                                     f"{min(self._settings.send_timeout_s, timeout_s):g} s")
            if rv != _nng.OK:
                raise _nng.error_for(rv, f"send to {ep.url}")
            left = deadline - time.monotonic()
            if left <= 0:
                # The request went out; its reply will be discarded by nng.
                raise RequestTimeout(f"no reply from {ep.url} within {timeout_s:g} s")
            rv, reply = ch.recv(_nng.to_ms(left))
            if rv == _nng.ETIMEDOUT:
                raise RequestTimeout(f"no reply from {ep.url} within {timeout_s:g} s")
            if rv != _nng.OK:
                raise _nng.error_for(rv, f"reply from {ep.url}")
            ok = True
            return reply
        finally:
            self._release(ep, ch, ok)

    def _attempt_failed(self, index: int, exc: TransportError) -> None:
        with self._lock:
            self._counts["attempt_failures"] += 1
            if isinstance(exc, RequestTimeout):
                self._counts["timeouts"] += 1
            moved = False
            if self._current == index and len(self._eps) > 1:
                self._current = (index + 1) % len(self._eps)
                moved = True
        log.info("rpc attempt failed", extra={"fields": {
            "client": self._name, "endpoint": self._eps[index].url, "error": str(exc),
            "next": self._eps[self._current].url if moved else None}})

    def _backoff(self, attempt: int) -> float:
        s = self._settings
        delay = min(s.retry_backoff_max_s, s.retry_backoff_s * (2.0 ** attempt))
        return delay * (0.5 + 0.5 * self._rng())
