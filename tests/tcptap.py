"""A loopback TCP relay that records every byte both ways: the byte capture of what a
node receives (and answers) over the network, for tests.

``TcpTap(target)`` listens on a free 127.0.0.1 port and relays each accepted
connection to ``target``, byte for byte, both ways. A test points a client (or a
node's advertised address) at ``tap.address`` instead of the node, so every byte
the node receives on that port goes through the tap. The tap keeps each
connection's two streams — ``IN`` (to the node) and ``OUT`` (from the node) — and
cuts them into nng SP messages (``Frame``: TCP transport, an 8-byte handshake, then
64-bit length-prefixed messages; REQ/REP bodies start with a 4-byte request id,
which ``Frame.body`` drops), so a test can decode what went through.

Bounded: past ``limit`` recorded bytes the tap stops recording (``overflowed``) but
keeps relaying, and a relay thread moves at most ``CHUNK`` bytes at a time (no queue
in between: a slow reader slows its writer). ``close()`` ends the listener and every
connection and joins the threads.

``mark()`` and ``since=`` select what arrived after a point (a test's round).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["in", "out"]
IN: Direction = "in"
OUT: Direction = "out"

#: Bytes one relay read moves.
CHUNK = 65536
#: SP protocol numbers (nng): REQ/REP messages carry a 4-byte request id first.
_REQ_REP = {0x30, 0x31}
_SP_HEAD = 8
_LEN = 8


@dataclass(frozen=True)
class Frame:
    """One SP message seen on a connection."""

    seq: int  # order of completion over the whole tap
    conn: int  # which accepted connection
    direction: Direction
    protocol: int  # the sender's SP protocol number (0x30 REQ, 0x31 REP, 0x20 PUB, ...)
    body: bytes  # the message, without the SP length and without a REQ/REP request id


@dataclass
class _Stream:
    """One direction of one connection: its bytes (after ``seq`` numbers) and the SP
    message parser's state."""

    conn: int
    direction: Direction
    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    pending: bytearray = field(default_factory=bytearray)
    protocol: int | None = None
    broken: bool = False  # not an SP stream (or recording stopped mid-message)


class TcpTap:
    """A recording relay in front of ``target`` (``tcp://host:port`` or ``host:port``).

    The tap binds its own port at once; ``target`` may come later (``relay_to``), so a
    test can bind every tap before it picks the nodes' ports (a port the kernel just
    gave ``free_ports`` may be handed to a tap's bind otherwise, and the node that was
    to listen there fails with "address in use"). Until then a connection is refused.
    """

    def __init__(self, target: str | None = None, *, name: str = "tap",
                 limit: int = 64 << 20) -> None:
        self.name = name
        self.target: tuple[str, int] | None = None
        if target is not None:
            self.relay_to(target)
        self.limit = limit
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._srv.getsockname()[1]}"
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._streams: list[_Stream] = []
        self._frames: list[Frame] = []
        self._seq = 0
        self._conns = 0
        self._recorded = 0
        self.bytes = {IN: 0, OUT: 0}  # relayed, recorded or not
        self.overflowed = False
        self._closed = threading.Event()
        self._spawn(self._accept, f"{name}-accept")

    def relay_to(self, target: str) -> TcpTap:
        """Relay new connections to ``target``."""
        host, _, port = target.removeprefix("tcp://").rpartition(":")
        self.target = (host, int(port))
        return self

    # -- relay -----------------------------------------------------------------------

    def _spawn(self, fn: Callable[..., None], name: str, *args: object) -> None:
        th = threading.Thread(target=fn, args=args, daemon=True, name=name)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [th]
        th.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                if self.target is None:
                    raise ConnectionRefusedError("no target yet")
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:  # the node is down: the client sees a reset and redials
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    upstream.close()
                    return
                self._conns += 1
                conn = self._conns
                self._socks |= {client, upstream}
                to_node, from_node = _Stream(conn, IN), _Stream(conn, OUT)
                self._streams += [to_node, from_node]
            self._spawn(self._pump, f"{self.name}-{conn}-in", client, upstream, to_node)
            self._spawn(self._pump, f"{self.name}-{conn}-out", upstream, client, from_node)

    def _pump(self, src: socket.socket, dst: socket.socket, stream: _Stream) -> None:
        try:
            while data := src.recv(CHUNK):
                self._record(stream, data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side gone: end both, as a relay that vanished would.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._socks -= {src, dst}

    def _record(self, stream: _Stream, data: bytes) -> None:
        with self._lock:
            self.bytes[stream.direction] += len(data)
            if self._recorded + len(data) > self.limit:
                self.overflowed = True
                stream.broken = True
                return
            self._recorded += len(data)
            self._seq += 1
            stream.chunks.append((self._seq, data))
            if not stream.broken:
                stream.pending += data
                self._parse(stream)

    def _parse(self, stream: _Stream) -> None:
        """Cut complete SP messages off ``stream.pending`` (under the lock)."""
        buf = stream.pending
        if stream.protocol is None:
            if len(buf) < _SP_HEAD:
                return
            if buf[:4] != b"\x00SP\x00":
                stream.broken = True
                return
            stream.protocol = int.from_bytes(buf[4:6], "big")
            del buf[:_SP_HEAD]
        head = 4 if stream.protocol in _REQ_REP else 0
        while len(buf) >= _LEN:
            (n,) = struct.unpack(">Q", buf[:_LEN])
            if len(buf) < _LEN + n:
                return
            body = bytes(buf[_LEN + head:_LEN + n])
            del buf[:_LEN + n]
            self._seq += 1
            self._frames.append(Frame(self._seq, stream.conn, stream.direction,
                                      stream.protocol, body))

    # -- what was seen -----------------------------------------------------------------

    def mark(self) -> int:
        """A point in the capture: pass it as ``since`` to see only what came after."""
        with self._lock:
            return self._seq

    def frames(self, direction: Direction | None = None, since: int = 0,
               until: int | None = None) -> list[Frame]:
        """Complete SP messages after mark ``since`` (up to mark ``until``), in order
        of arrival."""
        end = until if until is not None else 1 << 62
        with self._lock:
            return [f for f in self._frames if since < f.seq <= end
                    and (direction is None or f.direction == direction)]

    def streams(self, direction: Direction, since: int = 0,
                until: int | None = None) -> dict[int, bytes]:
        """Each connection's recorded bytes in ``direction`` between the marks, by
        connection (a needle split across two connections is not one)."""
        end = until if until is not None else 1 << 62
        with self._lock:
            out = {st.conn: b"".join(c for s, c in st.chunks if since < s <= end)
                   for st in self._streams if st.direction == direction}
        return {k: b for k, b in out.items() if b}

    def received(self, since: int = 0) -> list[bytes]:
        """Every byte the node received through the tap, a ``bytes`` per connection."""
        return list(self.streams(IN, since).values())

    def sent(self, since: int = 0) -> list[bytes]:
        """Every byte the node sent back through the tap, a ``bytes`` per connection."""
        return list(self.streams(OUT, since).values())

    @property
    def connections(self) -> int:
        with self._lock:
            return self._conns

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection, join the relay threads."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._srv.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for th in threads:
            th.join(timeout)

    def __enter__(self) -> TcpTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def found(needles: Iterable[bytes], haystacks: Iterable[bytes]) -> list[bytes]:
    """The needles that occur in any haystack."""
    hay = list(haystacks)
    return [n for n in needles if any(n in h for h in hay)]


def frames_of(taps: Iterable[TcpTap], direction: Direction | None = None,
              since: dict[str, int] | None = None,
              until: dict[str, int] | None = None) -> Iterator[Frame]:
    """The frames of several taps (``since``, ``until``: a mark per tap name)."""
    for t in taps:
        yield from t.frames(direction, (since or {}).get(t.name, 0),
                            (until or {}).get(t.name))


__all__ = ["CHUNK", "IN", "OUT", "Direction", "Frame", "TcpTap", "found", "frames_of"]
