"""The root of Omega's error tree.

Each package raises subclasses of these; foreign exceptions (nng, LMDB, msgpack,
onnxruntime) are translated at the boundary that calls them, so callers catch
only our types.
"""

from __future__ import annotations


class OmegaError(Exception):
    """Base of every error Omega raises on purpose."""


class ConfigError(OmegaError):
    """A configuration file or flag is invalid. Names the file and the key."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}")


class ProtocolError(OmegaError):
    """A message could not be accepted. ``code`` is the wire error code."""

    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(f"{self.code}: {message}")


class TransportError(OmegaError):
    """A request could not be delivered or answered over the network."""


class RequestTimeout(TransportError):
    """No reply within the deadline, after every allowed retry."""


class BrainError(OmegaError):
    """The TV brain refused an input or could not use its data directory."""


class StoreError(OmegaError):
    """The replicated store refused or could not complete a command."""
