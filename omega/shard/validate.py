"""Checks a push must pass before anything is proposed, as plain functions.

The order in ``ShardService`` is: decode (the protocol's size and schema limits) →
shape (this shard's stricter report limits) → signature and timestamp → leader →
device registry → sequence number → rate limit → storage back-pressure. Every
refusal is a ``ProtocolError`` subclass that becomes an ``ErrorReply``; none
touches state.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

from omega.protocol import Push, TooLarge, derive_device_key
from omega.shard.commands import DIGEST_LEN
from omega.shard.errors import UnknownDevice
from omega.shard.settings import ShardSettings
from omega.shard.state import REGISTERED, REVOKED


def check_push_shape(msg: Push, settings: ShardSettings) -> None:
    """This shard's limits on sealed reports (stricter than the protocol's)."""
    if len(msg.reports) > settings.max_reports:
        raise TooLarge(f"{len(msg.reports)} sealed reports, at most {settings.max_reports} "
                       f"per push")
    for i, r in enumerate(msg.reports):
        if len(r) > settings.max_report_bytes:
            raise TooLarge(f"sealed report {i} is {len(r)} bytes, at most "
                           f"{settings.max_report_bytes}")


def device_hash(dedup_secret: bytes, device_id: str) -> bytes:
    """``HMAC-SHA256(dedup_secret, device_id)``: the only name state keeps for a device."""
    return hmac.digest(dedup_secret, device_id.encode("ascii"), "sha256")


class DeviceKeys:
    """``device_id`` → ``(device key, keyed hash)``, in a bounded LRU (thread-safe).

    Each is an HMAC-SHA256, and with OpenSSL 3 one HMAC costs ~10-20 µs of CPU: a
    device's push, pull and heartbeat would derive both every time. ``size``
    bounds the memory (~250 bytes an entry). Ids reaching here passed decoding
    (1-31 identifier characters).
    """

    def __init__(self, fleet_key: bytes, dedup_secret: bytes, size: int = 16_384) -> None:
        def derive(device_id: str) -> tuple[bytes, bytes]:
            return (derive_device_key(fleet_key, device_id),
                    device_hash(dedup_secret, device_id))

        self._cached = lru_cache(maxsize=size)(derive)

    def get(self, device_id: str) -> tuple[bytes, bytes]:
        """``(HMAC(fleet_key, device_id), HMAC(dedup_secret, device_id))``."""
        return self._cached(device_id)

    def info(self) -> dict[str, int]:
        i = self._cached.cache_info()
        return {"hits": i.hits, "misses": i.misses, "size": i.currsize}


def report_digest(reports: Sequence[bytes]) -> bytes:
    """What a retry must repeat: a hash of the push's sealed reports, in order."""
    h = hashlib.sha256()
    for r in reports:
        h.update(len(r).to_bytes(4, "big"))
        h.update(r)
    return h.digest()[:DIGEST_LEN]


def check_registry(status: int, registration: str) -> None:
    """Refuse a revoked device, and an unprovisioned one in "registered" mode."""
    if status == REVOKED:
        raise UnknownDevice("unknown device: revoked")
    if registration == "registered" and status != REGISTERED:
        raise UnknownDevice("unknown device: not provisioned on this shard")
