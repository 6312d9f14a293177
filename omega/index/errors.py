"""Errors of the vector index, all under ``omega.errors.BrainError``.

Every method validates its whole input before it changes anything, so an error
means the index is exactly as it was.
"""

from __future__ import annotations

from omega.errors import BrainError

__all__ = [
    "DimensionMismatch",
    "IndexFileError",
    "InvalidArgument",
    "InvalidVector",
    "VectorIndexError",
]


class VectorIndexError(BrainError):
    """Base of the index's errors."""


class InvalidArgument(VectorIndexError, ValueError):
    """Ids, values or ``k`` are malformed (wrong shape, negative id, duplicate, NaN, k <= 0)."""


class DimensionMismatch(InvalidArgument):
    """Vectors or queries do not have the index's dimension."""

    def __init__(self, expected: int, got: int) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"vectors must have {expected} dimensions, got {got}")


class InvalidVector(InvalidArgument):
    """A vector holds NaN or infinity, or is (almost) zero and has no direction."""


class IndexFileError(VectorIndexError):
    """A saved index cannot be read (missing, damaged, another format) or written."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")
