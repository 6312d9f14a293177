"""What an unauthenticated peer of the Raft port may cost: bounded (docs/raft.md).

PySyncObj 0.3.17's ``TcpConnection`` reads a frame up to the length its first 4
bytes declare (up to 2^31 - 1), appending every 64 KiB chunk to an immutable
``bytes`` (quadratic copying), on the Raft thread, reading as long as the peer
keeps sending — all before the password is checked, since decrypting needs the
whole frame. One peer streaming 80 MB froze a follower's Raft thread for 52 s.

``FrameGuard`` is a mixin that ``omega.raft.node`` puts in front of PySyncObj's
``TcpConnection`` (the wire format is unchanged; this module imports no PySyncObj):

- a frame whose declared length is over the limit is refused **from its 4-byte
  header**, before it is buffered: the connection is dropped and counted. The
  limit is ``UNAUTHENTICATED_FRAME_BYTES`` until a frame from the peer has been
  decrypted and unpickled (with a password, that proves the peer knows it), then
  ``WireLimits.max_frame_bytes``, which admits PySyncObj's largest legitimate
  message (an append_entries batch or a snapshot chunk, base64-encrypted);
- the read buffer is a ``bytearray`` (linear appends, front deletes in place);
- at most ``WireLimits.read_budget_bytes`` are read per poll event, so a fast
  sender cannot hold the Raft thread (the poller is level-triggered: the rest is
  read at the next tick, after Raft's own work).

The transport side (``omega.raft.node._GuardedTransport``) adds a deadline for a
new connection to authenticate and a cap on unauthenticated connections.
``node.py`` installs the guarded class by replacing the ``TcpConnection`` name in
the two PySyncObj modules that construct connections, as ``zlib`` is replaced for
the wire codec.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from omega.throttled_log import ThrottledLog

log = logging.getLogger("omega.raft.wire")
pressure_log = ThrottledLog(log, 10.0)

#: A peer that has not yet sent one frame we could decrypt (its key-exchange frame
#: is ~200 bytes encrypted) may declare at most this much.
UNAUTHENTICATED_FRAME_BYTES = 64 * 1024
_HEADER = struct.Struct("i")  # PySyncObj's: native int, little-endian on every host we run
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


@dataclass(frozen=True)
class WireLimits:
    """Per replica: frame limit after authentication, and the read budget per event."""

    max_frame_bytes: int
    read_budget_bytes: int = 1024 * 1024


def frame_limit(max_command_bytes: int, batch_bytes: int, snapshot_chunk_bytes: int) -> int:
    """The largest frame PySyncObj sends with these settings, with margin.

    An append_entries message holds entries until their commands reach
    ``batch_bytes`` (so up to ``batch_bytes + max_command_bytes``), each entry with
    some tens of bytes of pickle framing (twice the payload covers entries of the
    smallest size); a snapshot message holds one chunk. Encryption (Fernet) is
    base64: 4/3 of the pickle plus 73 bytes.
    """
    payload = max(2 * (batch_bytes + max_command_bytes), 2 * snapshot_chunk_bytes)
    return payload * 4 // 3 + 64 * 1024


class WireCounters:
    """Process-wide counts of what the guards refused (all replicas of the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.oversized_frames = 0
        self.unauthenticated_dropped = 0
        self.auth_timeouts = 0
        self.refused_connections = 0

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"oversized_frames": self.oversized_frames,
                    "unauthenticated_dropped": self.unauthenticated_dropped,
                    "auth_timeouts": self.auth_timeouts,
                    "refused_connections": self.refused_connections}


counters = WireCounters()


class FrameGuard:
    """Bounded frames, linear buffering and a read budget, over PySyncObj's connection.

    Put first in the bases of a subclass of PySyncObj's ``TcpConnection``, which must
    also set ``loads`` (PySyncObj's unpickler) and ``decompress`` (the wire codec's).
    Overrides the three private (name-mangled) methods that read and parse; every
    other behaviour is PySyncObj's. ``limits`` is set by the transport right after
    construction; until then the class default applies.
    """

    limits = WireLimits(max_frame_bytes=UNAUTHENTICATED_FRAME_BYTES)
    loads: Callable[[bytes], Any]
    decompress: Callable[[bytes], bytes]
    encryptor: Any
    recvRandKey: Any

    if TYPE_CHECKING:  # PySyncObj's TcpConnection provides these
        def disconnect(self) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authenticated = False
        self.opened_at = _monotonic()
        self._last_read = 0
        self._peer = ""

    def connect(self, host: str, port: int) -> bool:
        # An outgoing link to a configured partner: without a password there is
        # nothing to authenticate, so its frames get the full limit at once; with
        # one, the partner's first frame (its key) must decrypt first.
        self.authenticated = self.encryptor is None
        self.opened_at = _monotonic()
        return bool(super().connect(host, port))  # type: ignore[misc]

    def peer(self) -> str:
        if not self._peer:
            sock = self.__dict__.get("_TcpConnection__socket")
            try:
                host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
                self._peer = f"{host}:{port}"
            except OSError:
                self._peer = "?"
        return self._peer

    def frame_cap(self) -> int:
        return self.limits.max_frame_bytes if self.authenticated else UNAUTHENTICATED_FRAME_BYTES

    def _buffer(self) -> bytearray:
        buf = self.__dict__["_TcpConnection__readBuffer"]
        if type(buf) is not bytearray:  # PySyncObj resets it to bytes() on (dis)connect
            buf = bytearray(buf)
            self.__dict__["_TcpConnection__readBuffer"] = buf
        return buf

    def _refuse_frame(self, declared: int) -> None:
        counters.add("oversized_frames")
        if not self.authenticated:
            counters.add("unauthenticated_dropped")
        pressure_log.event("raft_oversized_frame", "raft port: frame over the limit refused "
                           "from its header; connection dropped", {
                               "peer": self.peer(), "declared_bytes": declared,
                               "limit": self.frame_cap(), "authenticated": self.authenticated})
        self.disconnect()

    def _header_ok(self, buf: bytearray) -> bool:
        if len(buf) >= 4:
            declared = _HEADER.unpack_from(buf, 0)[0]
            if declared < 0 or declared > self.frame_cap():
                self._refuse_frame(declared)
                return False
        return True

    def _TcpConnection__tryReadBuffer(self) -> None:
        budget = self.limits.read_budget_bytes
        while budget > 0 and self._TcpConnection__processRead():  # type: ignore[attr-defined]
            budget -= self._last_read
        self.__dict__["_TcpConnection__lastReadTime"] = _monotonic()

    def _TcpConnection__processRead(self) -> bool:
        sock = self.__dict__["_TcpConnection__socket"]
        if sock is None:
            return False
        try:
            incoming = sock.recv(self.__dict__["_TcpConnection__recvBufferSize"])
        except OSError as e:
            if e.errno not in _AGAIN:
                self.disconnect()
            return False
        if not incoming:
            self.disconnect()
            return False
        buf = self._buffer()
        buf += incoming
        self._last_read = len(incoming)
        return self._header_ok(buf)

    def _TcpConnection__processParseMessage(self) -> Any:
        buf = self._buffer()
        if len(buf) < 4:
            return None
        if not self._header_ok(buf):
            return None
        length = _HEADER.unpack_from(buf, 0)[0]
        if len(buf) - 4 < length:
            return None
        data = bytes(buf[4:4 + length])
        try:
            encryptor = self.encryptor
            if encryptor:
                stamp = int(encryptor.extract_timestamp(data))
                last: int = self.__dict__["recvLastTimestamp"]
                if stamp < last:
                    raise ValueError("replayed frame")
                self.__dict__["recvLastTimestamp"] = stamp
                data = encryptor.decrypt(data)
            message = self.loads(self.decompress(data))
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise ValueError("wrong connection key")
        except Exception:
            if not self.authenticated:
                counters.add("unauthenticated_dropped")
                pressure_log.event("raft_bad_frame", "raft port: a frame that does not "
                                   "decrypt from an unauthenticated peer; connection dropped",
                                   {"peer": self.peer(), "bytes": length})
            self.disconnect()
            return None
        del buf[:4 + length]
        self.authenticated = True
        return message


__all__ = ["FrameGuard", "WireLimits", "counters", "frame_limit"]
