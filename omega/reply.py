"""Reply types of a request handler: ``Reply``, ``Pending``, ``Handler``.

A leaf module (no engine imported) so that services can speak the handler
contract without importing the nng transport that serves it.

``Pending``: a reply a handler gives later, from whatever thread has it.

A handler that cannot answer at once (a push waiting for its Raft commit) returns
a ``Pending`` instead of bytes and keeps it; whoever learns the answer calls
``resolve(reply)``. The server then sends the reply from that thread, and no
worker thread waits in the meantime (docs/transport.md, "Deferred replies").

It is a one-shot cell with one listener: no condition variable, no thread
wake-up of its own. ``wait`` (in-memory callers, tests) is the only blocking use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from omega.errors import RequestTimeout

__all__ = ["Handler", "OnError", "Pending", "Reply", "reply_bytes"]

_UNSET = object()


class Pending:
    """A reply to come. ``resolve`` it once, from any thread; later calls are ignored."""

    __slots__ = ("_listener", "_lock", "_reply")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reply: object = _UNSET
        self._listener: Callable[[bytes], None] | None = None

    def resolve(self, reply: bytes) -> bool:
        """Give the reply; it is sent from this thread. False if it was already given."""
        with self._lock:
            if self._reply is not _UNSET:
                return False
            self._reply = reply
            listener = self._listener
        if listener is not None:
            listener(reply)
        return True

    def on_resolve(self, listener: Callable[[bytes], None]) -> None:
        """Call ``listener(reply)`` once the reply is known — now, if it already is.

        One listener per ``Pending`` (the server that sends the reply).
        """
        with self._lock:
            if self._listener is not None:
                raise RuntimeError("a Pending reply has one listener")
            self._listener = listener
            reply = self._reply
        if reply is not _UNSET:
            assert isinstance(reply, bytes)
            listener(reply)

    @property
    def done(self) -> bool:
        return self._reply is not _UNSET

    def wait(self, timeout_s: float) -> bytes:
        """Block until resolved; ``RequestTimeout`` after ``timeout_s``."""
        ready = threading.Event()
        self.on_resolve(lambda _reply: ready.set())
        if not ready.wait(timeout_s):
            raise RequestTimeout(f"no reply within {timeout_s} s")
        reply = self._reply
        assert isinstance(reply, bytes)
        return reply


#: What a handler returns: the reply now, or a ``Pending`` resolved later.
Reply = bytes | Pending


#: A request handler: request bytes in, a reply (now or later) out.
Handler = Callable[[bytes], Reply]
#: ``on_error(exc) -> reply``: the error reply sent for a handler's exception.
OnError = Callable[[BaseException], bytes]


def reply_bytes(reply: Reply, timeout_s: float) -> bytes:
    """The bytes of ``reply``, waiting for a ``Pending`` (for callers without a server)."""
    if isinstance(reply, Pending):
        return reply.wait(timeout_s)
    return reply
