"""Server-to-server requests: send a batch part upstream, get its typed reply.

``Upstream`` wraps an ``RpcClient`` over the next stage's endpoints (an aggregator,
or the hub's replicas): it follows ``not_leader`` (to the named leader, else the
next endpoint) a bounded number of times and turns every refusal into the
protocol's typed exception, so a caller only sees an ack or an error to retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from omega.protocol import ErrorReply, Message, NotLeaderError, decode, encode
from omega.protocol.limits import MAX_FRAME_BYTES
from omega.transport import RpcClient, TransportSettings

from .batches import UnexpectedReply

M = TypeVar("M", bound=Message)

class Upstream:
    """Typed request/reply to the next stage, following its leader."""

    def __init__(self, endpoints: Sequence[str], settings: TransportSettings, *,
                 name: str = "upstream", redirects: int = 3) -> None:
        self._eps = list(dict.fromkeys(endpoints))
        # Replies may be whole GlobalUpdate parts (catch-up): up to the frame limit.
        settings = replace(settings,
                           recv_max_size=max(settings.recv_max_size, MAX_FRAME_BYTES + 1024))
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
