"""Device authentication: keys, request signatures, timestamps and sequence numbers.

A TV's key is ``HMAC-SHA256(fleet_key, device_id)`` (or a provisioned key). A signed
message (``Push``, ``Pull``, ``Heartbeat``) carries ``sig = HMAC-SHA256(key, frame)``
where ``frame`` is the message's own canonical encoding with an empty ``sig``: it
covers the tag, the protocol version, the device id, the sequence number, the
timestamp and the body. Heartbeats carry the first 16 bytes of that MAC to stay
within 64 bytes (see docs/protocol.md for why 128 bits is enough there).
"""

from __future__ import annotations

import hmac
import threading
from collections import OrderedDict
from typing import Literal, TypeVar

from omega.protocol.checks import Invalid
from omega.protocol.codec import encode_fields
from omega.protocol.errors import BadRequest, Stale, Unauthorized
from omega.protocol.limits import HEARTBEAT_MAC_BYTES, MAC_BYTES, MIN_KEY_BYTES
from omega.protocol.messages import Heartbeat, Pull, Push

__all__ = [
    "SIGNED_TYPES",
    "ReplayGuard",
    "SequenceClass",
    "classify_sequence",
    "derive_device_key",
    "sign",
    "signed_payload",
    "verify",
]

Signed = TypeVar("Signed", Push, Pull, Heartbeat)
SequenceClass = Literal["new", "retry", "replay"]

#: Signed message types and the MAC length each carries.
SIGNED_TYPES: dict[type[Push | Pull | Heartbeat], int] = {
    Push: MAC_BYTES,
    Pull: MAC_BYTES,
    Heartbeat: HEARTBEAT_MAC_BYTES,
}
for _cls in SIGNED_TYPES:  # sign() replaces the last field; keep it that way
    assert _cls._names[-1] == "sig", _cls

_DEVICE_ID_CHECK = Push._checks[Push._names.index("device_id")]


def _check_key(key: object) -> bytes:
    if type(key) is not bytes or len(key) < MIN_KEY_BYTES:
        raise BadRequest(f"a key is bytes of at least {MIN_KEY_BYTES} bytes")
    return key


def derive_device_key(fleet_key: bytes, device_id: str) -> bytes:
    """``HMAC-SHA256(fleet_key, device_id)``: the key a TV signs with (32 bytes)."""
    _check_key(fleet_key)
    try:
        _DEVICE_ID_CHECK(device_id)
    except Invalid as exc:
        raise BadRequest(f"device_id: {exc.reason}") from None
    return hmac.digest(fleet_key, device_id.encode("ascii"), "sha256")


def signed_payload(msg: Push | Pull | Heartbeat) -> bytes:
    """The bytes a signature covers: ``msg`` encoded with an empty ``sig``."""
    values = tuple(msg.__dict__.values())
    return encode_fields(type(msg), (*values[:-1], b""))


def _mac(msg: Push | Pull | Heartbeat, key: bytes) -> bytes:
    length = SIGNED_TYPES.get(type(msg))
    if length is None:
        raise BadRequest(f"{type(msg).__name__} is not a signed message")
    return hmac.digest(_check_key(key), signed_payload(msg), "sha256")[:length]


def sign(msg: Signed, key: bytes) -> Signed:
    """A copy of ``msg`` with ``sig`` set (any previous ``sig`` is ignored)."""
    mac = _mac(msg, key)
    # The fields are already valid and the MAC has the right length: copy, no re-check.
    fields = dict(msg.__dict__)
    fields["sig"] = mac
    signed = object.__new__(type(msg))
    object.__setattr__(signed, "__dict__", fields)
    return signed


def verify(msg: Push | Pull | Heartbeat, key: bytes, now_ms: int, window_ms: int) -> None:
    """Check the signature, then that ``ts_ms`` is within ``window_ms`` of ``now_ms``.

    Raises ``Unauthorized`` (missing or wrong MAC) or ``Stale`` (authentic but outside
    the window, either side). The MAC is compared in constant time.
    """
    expected = _mac(msg, key)
    if not hmac.compare_digest(expected, msg.sig):
        raise Unauthorized("missing or invalid signature")
    if abs(now_ms - msg.ts_ms) > window_ms:
        raise Stale(f"timestamp is {describe_skew(now_ms - msg.ts_ms)} by the server's clock "
                    f"(allowed: {window_ms / 1000:g} s either way); check the device's clock")


def describe_skew(behind_ms: int) -> str:
    """``600_000`` → ``"10 min in the past"``, ``-4_200`` → ``"4.2 s in the future"``."""
    seconds = abs(behind_ms) / 1000
    if seconds < 120:
        amount = f"{seconds:.1f} s"
    elif seconds < 2 * 3600:
        amount = f"{seconds / 60:.0f} min"
    elif seconds < 2 * 86400:
        amount = f"{seconds / 3600:.1f} h"
    else:
        amount = f"{seconds / 86400:.1f} days"
    return f"{amount} {'in the past' if behind_ms > 0 else 'in the future'}"


def classify_sequence(seq: int, last_acked: int | None) -> SequenceClass:
    """Where a request's sequence number stands against the last acknowledged one.

    ``"new"``: above it (gaps are fine); ``"retry"``: equal, a repeat of the last
    acknowledged push, to be answered with the same ack and not applied again;
    ``"replay"``: below it, rejected (``Replay``).
    """
    if last_acked is None or seq > last_acked:
        return "new"
    if seq == last_acked:
        return "retry"
    return "replay"


class ReplayGuard:
    """Per-device last acknowledged sequence number, in memory, bounded (LRU).

    For servers that do not keep sequence numbers durably. Forgetting a device (when
    over ``capacity``) lets an old request of it through as "new", so pair it with
    ``verify``'s time window and size it above the number of devices seen within
    one window. Thread-safe.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._last: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._last)

    def last_acked(self, device_id: str) -> int | None:
        """The device's last recorded sequence number, if remembered."""
        with self._lock:
            return self._last.get(device_id)

    def classify(self, device_id: str, seq: int) -> SequenceClass:
        """``classify_sequence`` against what is remembered (no change)."""
        with self._lock:
            return classify_sequence(seq, self._last.get(device_id))

    def record(self, device_id: str, seq: int) -> None:
        """Remember ``seq`` as acknowledged (never moves backwards)."""
        with self._lock:
            self._record(device_id, seq)

    def admit(self, device_id: str, seq: int) -> SequenceClass:
        """Classify and, if new, record, atomically."""
        with self._lock:
            verdict = classify_sequence(seq, self._last.get(device_id))
            if verdict == "new":
                self._record(device_id, seq)
            return verdict

    def _record(self, device_id: str, seq: int) -> None:
        last = self._last.get(device_id)
        if last is None or seq > last:
            self._last[device_id] = seq
        self._last.move_to_end(device_id)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)
