"""Typed protocol errors: one class per wire error code.

A server turns any of these into an ``ErrorReply`` (``ErrorReply.from_error``) and a
client turns the reply back into the same class (``ErrorReply.to_error``), so both
sides catch the same types. Finer codes subclass the coarse code they refine, so
``except Unauthorized`` also catches ``Stale`` and ``Replay``.
"""

from __future__ import annotations

from omega.errors import ProtocolError

__all__ = [
    "ERROR_CODES",
    "BadRequest",
    "NotLeaderError",
    "ProtocolError",
    "RateLimited",
    "Replay",
    "Stale",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnknownType",
    "VersionMismatch",
    "error_class",
]


class BadRequest(ProtocolError):
    """The frame or a field in it is malformed or out of range."""

    code = "bad_request"


class TooLarge(BadRequest):
    """The frame, or a list inside it, is over its size limit."""

    code = "too_large"


class UnknownType(BadRequest):
    """The frame's tag names no message, or one this endpoint does not accept."""

    code = "unknown_type"


class VersionMismatch(BadRequest):
    """The frame carries another protocol version."""

    code = "version"


class Unauthorized(ProtocolError):
    """The signature is missing or does not match the device key."""

    code = "unauthorized"


class Stale(Unauthorized):
    """Authentic, but its timestamp is outside the accepted window."""

    code = "stale"


class Replay(Unauthorized):
    """Authentic, but its sequence number is older than the last acknowledged one."""

    code = "replay"


class RateLimited(ProtocolError):
    """Too many requests from this device; retry after ``retry_after_s``."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NotLeaderError(ProtocolError):
    """This replica cannot accept writes; ``leader`` is the address to use, if known.

    (Named ``NotLeaderError`` so it does not clash with ``omega.raft``'s store error.)
    """

    code = "not_leader"

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        self.leader = leader
        super().__init__(message)


class Unavailable(ProtocolError):
    """The service cannot answer now (starting, overloaded, no quorum)."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


_BY_CODE: dict[str, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        TooLarge,
        UnknownType,
        VersionMismatch,
        Unauthorized,
        Stale,
        Replay,
        RateLimited,
        NotLeaderError,
        Unavailable,
    )
}

#: Every code an ``ErrorReply`` may carry.
ERROR_CODES: frozenset[str] = frozenset(_BY_CODE)


def error_class(code: str) -> type[ProtocolError]:
    """The exception class for a wire error code (``ProtocolError`` if unknown)."""
    return _BY_CODE.get(code, ProtocolError)
