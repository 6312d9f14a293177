"""Server-to-server requests: send a batch part upstream, get its typed reply.

``Upstream`` wraps an ``RpcClient`` over the next stage's endpoints (an aggregator,
or the hub's replicas): it follows ``not_leader`` (to the named leader, else the
next endpoint) a bounded number of times and turns every refusal into the
protocol's typed exception, so a caller only sees an ack or an error to retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from omega.errors import ProtocolError
from omega.protocol import ErrorReply, Message, NotLeaderError, decode, encode
from omega.protocol.limits import MAX_FRAME_BYTES
from omega.transport import RpcClient, TransportSettings

M = TypeVar("M", bound=Message)

#: Reports per part: well under the protocol's 2048 items and 512 KiB per frame.
PART_REPORTS = 1500


class UnexpectedReply(ProtocolError):
    """The peer answered with a message of the wrong type."""

    code = "bad_request"


def batch_id(reports: Sequence[bytes]) -> str:
    """A content-addressed id: a hash of the reports in byte order (arrival order,
    shuffles and retries do not change it)."""
    h = hashlib.blake2b(digest_size=16)
    for r in sorted(reports):
        h.update(len(r).to_bytes(4, "big"))
        h.update(r)
    return h.hexdigest()


def split_parts(reports: Sequence[bytes], max_reports: int = PART_REPORTS,
                max_bytes: int = MAX_FRAME_BYTES // 2) -> list[tuple[bytes, ...]]:
    """Deterministic parts of one batch: reports in byte order (unrelated to arrival:
    sealed boxes look random), cut by count and bytes. The same reports always give
    the same parts, so ``(batch_id, part)`` names the same content on every retry."""
    parts: list[tuple[bytes, ...]] = []
    cur: list[bytes] = []
    size = 0
    for r in sorted(reports):
        if cur and (len(cur) >= max_reports or size + len(r) + 8 > max_bytes):
            parts.append(tuple(cur))
            cur, size = [], 0
        cur.append(r)
        size += len(r) + 8
    if cur:
        parts.append(tuple(cur))
    return parts


class Upstream:
    """Typed request/reply to the next stage, following its leader."""

    def __init__(self, endpoints: Sequence[str], settings: TransportSettings, *,
                 name: str = "upstream", redirects: int = 3) -> None:
        self._eps = list(dict.fromkeys(endpoints))
        self._rpc = RpcClient(self._eps, settings, name=name)
        self._redirects = redirects

    def call(self, msg: Message, expect: type[M], timeout_s: float | None = None) -> M:
        """Send ``msg``; return the reply of type ``expect``.

        Raises the protocol's typed error for a refusal, ``TransportError`` when
        no endpoint answers.
        """
        frame = encode(msg)
        for attempt in range(self._redirects + 1):
            reply = decode(self._rpc.request(frame, timeout_s))
            if isinstance(reply, expect):
                return reply
            if not isinstance(reply, ErrorReply):
                raise UnexpectedReply(f"expected {expect.__name__}, got {type(reply).__name__}")
            err = reply.to_error()
            if isinstance(err, NotLeaderError) and attempt < self._redirects:
                self._rpc.prefer(err.leader if err.leader else self._next())
                continue
            raise err
        raise NotLeaderError("no leader found upstream")

    def _next(self) -> str:
        cur = self._rpc.current
        i = self._eps.index(cur) if cur in self._eps else -1
        return self._eps[(i + 1) % len(self._eps)]

    def close(self) -> None:
        self._rpc.close()
