"""The request/reply port, and its in-memory twin for tests without sockets.

Code that sends requests depends on ``Requester``; production passes an
``RpcClient``, unit tests pass an ``InMemoryRequester`` wrapping the server-side
handler directly, with the same failure contract as ``RpcServer``.
"""

from __future__ import annotations

import threading
from typing import Protocol

from omega.reply import Handler, OnError, reply_bytes
from omega.transport.errors import TransportClosed

#: How long ``request`` waits for a deferred reply when the caller gives no timeout.
_DEFAULT_WAIT_S = 30.0


class Requester(Protocol):
    """What a caller of a remote service needs: ``RpcClient`` implements it."""

    def request(self, data: bytes, timeout_s: float | None = None) -> bytes:
        """Send ``data`` and return the reply; raises ``TransportError`` subclasses."""
        ...

    def close(self) -> None: ...


class InMemoryRequester:
    """Call ``handler`` in the caller's thread, answering an exception with ``on_error``.

    A deferred reply (a ``Pending``) is waited for, up to ``timeout_s``
    (``RequestTimeout``).
    """

    def __init__(self, handler: Handler, on_error: OnError) -> None:
        self._handler = handler
        self._on_error = on_error
        self._lock = threading.Lock()
        self._closed = False
        self.requests = 0
        self.handler_failures = 0

    def request(self, data: bytes, timeout_s: float | None = None) -> bytes:
        with self._lock:
            if self._closed:
                raise TransportClosed("in-memory requester is closed")
            self.requests += 1
        try:
            reply = self._handler(bytes(data))
        except Exception as exc:
            with self._lock:
                self.handler_failures += 1
            return self._on_error(exc)
        return bytes(reply_bytes(reply, _DEFAULT_WAIT_S if timeout_s is None else timeout_s))

    def close(self) -> None:
        with self._lock:
            self._closed = True
