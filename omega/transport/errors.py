"""Transport errors: subclasses of ``omega.errors.TransportError``.

nng's own exceptions and error numbers never leave ``omega.transport``; they are
translated here, at the boundary.
"""

from __future__ import annotations

from omega.errors import RequestTimeout, TransportError

__all__ = ["AddressInUse", "RequestTimeout", "TransportClosed", "TransportError"]


class TransportClosed(TransportError):
    """The socket was closed locally (``close()`` was called) while, or before, it was used."""


class AddressInUse(TransportError):
    """A server could not bind its listen address because something else holds it."""
