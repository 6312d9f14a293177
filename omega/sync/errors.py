"""Typed refusals of a pull response. When one is raised, the brain is unchanged."""

from __future__ import annotations

from omega.errors import ProtocolError

__all__ = ["MalformedPull", "PullRejected", "PullTooLarge", "RejectedCrowd", "StalePull",
           "UnknownPullVersion", "WrongDimensions"]


class PullRejected(ProtocolError):
    """A pull response the TV will not merge; nothing of it was applied."""

    code = "bad_request"


class MalformedPull(PullRejected):
    """The frame does not decode as a valid PullResp (wrong embedding size, NaN, ...)."""


class PullTooLarge(MalformedPull):
    """The frame is over the PullResp limit (64 KiB)."""


class WrongDimensions(PullRejected):
    """New content carries embeddings of another size than the brain's model."""


class StalePull(PullRejected):
    """The response's version is older than the one the brain already merged."""


class UnknownPullVersion(PullRejected):
    """The response claims a version the shard never announced to this TV."""


class RejectedCrowd(PullRejected):
    """The brain refused the crowd lists (bad ids, lists too long, ...)."""
