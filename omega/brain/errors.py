"""Errors the TV brain raises on purpose, all under ``omega.errors.BrainError``.

Two families: ``BadInput`` (the caller sent something we refuse; nothing was
written) and ``DataDirError`` (the data directory cannot be used as it is).
LMDB's own exceptions are translated in ``omega.brain.memory``.
"""

from __future__ import annotations

from omega.errors import BrainError

__all__ = [
    "BadInput",
    "BrainClosed",
    "BrainError",
    "CorruptDataDir",
    "DataDirError",
    "DataDirLocked",
    "InvalidContent",
    "InvalidCrowdUpdate",
    "InvalidEvent",
    "OutOfOrderEvent",
    "SchemaVersionMismatch",
    "StaleCrowdVersion",
    "StorageError",
    "StorageFull",
    "UnknownContent",
]


class BadInput(BrainError, ValueError):
    """The caller's input was refused; the brain's state is unchanged."""


class InvalidContent(BadInput):
    """A catalog item is malformed (empty or huge title, bad year, bad metadata...)."""

    def __init__(self, content_id: str, field: str, message: str) -> None:
        self.content_id = content_id
        self.field = field
        self.message = message
        super().__init__(f"content {content_id!r}: {field}: {message}")


class InvalidEvent(BadInput):
    """A viewing event is malformed (watch fraction outside [0, 1], NaN, bad time...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"viewing event: {field}: {message}")


class OutOfOrderEvent(InvalidEvent):
    """The event is older than the last observed one by more than the tolerance."""

    def __init__(self, timestamp: float, last_timestamp: float, tolerance_s: float) -> None:
        self.timestamp = timestamp
        self.last_timestamp = last_timestamp
        self.tolerance_s = tolerance_s
        super().__init__(
            "timestamp",
            f"{timestamp} is {last_timestamp - timestamp:.0f} s older than the last observed "
            f"event ({last_timestamp}); the tolerance is {tolerance_s:.0f} s",
        )


class UnknownContent(BadInput):
    """The content id is not in the catalog."""

    def __init__(self, content_id: str) -> None:
        self.content_id = content_id
        super().__init__(f"unknown content id {content_id!r} (add it with add_content first)")


class InvalidCrowdUpdate(BadInput):
    """A crowd update (neighbour lists, popularity, trends) is malformed."""


class StaleCrowdVersion(InvalidCrowdUpdate):
    """A crowd update is older than the one already applied."""

    def __init__(self, version: int, current: int) -> None:
        self.version = version
        self.current = current
        super().__init__(f"crowd update version {version} is older than the applied {current}")


class BrainClosed(BrainError):
    """The brain was closed; open it again."""


class DataDirError(BrainError):
    """The data directory cannot be used."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class CorruptDataDir(DataDirError):
    """The LMDB files are damaged or are not ours."""


class SchemaVersionMismatch(DataDirError):
    """The data directory was written by an incompatible version of the brain."""

    def __init__(self, path: str, found: str, expected: str) -> None:
        self.found = found
        self.expected = expected
        super().__init__(path, f"schema version {found!r}, this brain reads {expected!r}")


class DataDirLocked(DataDirError):
    """Another brain (in this or another process) has the data directory open."""


class StorageError(BrainError):
    """LMDB refused a read or a write; the transaction was rolled back."""


class StorageFull(StorageError):
    """The LMDB map is full: raise ``map_size`` in the brain settings."""
