"""Shard-specific refusals, on top of the protocol's error tree."""

from __future__ import annotations

from omega.protocol.errors import Unauthorized


class UnknownDevice(Unauthorized):
    """Authentic signature, but the device is revoked, or not provisioned when the
    shard runs with ``registration = "registered"``.

    Travels as the wire code ``unauthorized`` (the protocol has no finer code for it
    yet); the message says "unknown device".
    """
