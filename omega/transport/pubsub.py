"""Publisher / Subscriber: nng Pub0/Sub0 for broadcasts (the hub's GlobalUpdate).

Pub/sub is best effort: a subscriber that is not connected yet, or too slow,
misses messages, and nothing tells it. Broadcast payloads must therefore carry a
version so a subscriber can notice a gap and catch up by request/reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from omega.transport import _nng
from omega.transport.errors import TransportClosed, TransportError
from omega.transport_settings import TransportSettings

log = logging.getLogger("omega.transport")

#: A subscriber waits in slices this long, so close() needs no cross-thread nng call.
_SLICE_S = 0.1


class Publisher:
    """Listen on ``listen`` and send each ``publish(data)`` to every connected subscriber."""

    def __init__(self, listen: str, settings: TransportSettings) -> None:
        _nng.check_address(listen)
        self._url = listen
        self._settings = settings
        self._sock: Any = None
        self._address = ""
        self._lock = threading.Lock()
        self._closed = False
        self.published = 0

    def start(self) -> Publisher:
        with self._lock:
            if self._sock is not None or self._closed:
                raise TransportError("Publisher.start() called twice or after close()")
            sock = _nng.open_socket("pub", self._settings, self._url)
            try:
                _, self._address = _nng.listen(sock, self._url)
                self._channel = _nng.Channel(sock, use_ctx=False)
            except BaseException:
                _nng.close_socket(sock)
                raise
            self._sock = sock
            _nng.track(self)
        return self

    @property
    def address(self) -> str:
        if not self._address:
            raise TransportError("Publisher.address is known after start()")
        return self._address

    def publish(self, data: bytes) -> None:
        """Queue ``data`` to every subscriber (never blocks on a slow one). Thread-safe."""
        with self._lock:
            if self._sock is None or self._closed:
                raise TransportClosed("publisher is not started or closed")
            rv = self._channel.send(data, _nng.to_ms(self._settings.send_timeout_s))
            if rv != _nng.OK:
                raise _nng.error_for(rv, f"publish on {self._address}")
            self.published += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._sock is None:
                return
            self._channel.close()
            _nng.close_socket(self._sock)
        _nng.untrack(self)

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """Dial ``dial`` (reconnecting in the background) and receive matching broadcasts.

    ``topics``: byte prefixes to receive; the default ``(b"",)`` receives everything.
    ``recv_max_size`` overrides the settings' limit (broadcasts may be larger than
    requests). One consumer thread calls ``recv``; ``close()`` from any thread ends it
    within 0.1 s.
    """

    def __init__(self, dial: str, settings: TransportSettings, *,
                 topics: Iterable[bytes] = (b"",), recv_max_size: int | None = None) -> None:
        if recv_max_size is not None and not 1024 <= recv_max_size <= 1 << 30:
            raise ValueError("recv_max_size must be between 1 KiB and 1 GiB")
        self._url = dial
        self._lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._closed = False
        self.received = 0
        sock = _nng.open_socket("sub", settings, dial, recv_max_size=recv_max_size)
        try:
            with _nng.translated(f"subscribe on {dial}"):
                for topic in topics:
                    sock.subscribe(bytes(topic))
            _nng.dial(sock, dial)
            self._channel = _nng.Channel(sock, use_ctx=False)
        except BaseException:
            _nng.close_socket(sock)
            raise
        self._sock = sock
        _nng.track(self)

    def recv(self, timeout_s: float) -> bytes | None:
        """The next broadcast, or None if none arrived within ``timeout_s``.

        Raises TransportClosed once ``close()`` was called.
        """
        deadline = time.monotonic() + timeout_s
        with self._recv_lock:
            while True:
                if self._closed:
                    raise TransportClosed("subscriber is closed")
                # Wait in slices so close() is noticed without touching our aio.
                left = deadline - time.monotonic()
                rv, data = self._channel.recv(_nng.to_ms(min(left, _SLICE_S)))
                self._channel.drop_message()
                if rv == _nng.OK:
                    self.received += 1
                    return data
                if rv != _nng.ETIMEDOUT:
                    raise _nng.error_for(rv, f"receive from {self._url}")
                if time.monotonic() >= deadline:
                    return None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._recv_lock:  # a consumer in recv() leaves within one slice
            self._channel.close()
            _nng.close_socket(self._sock)
        _nng.untrack(self)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
