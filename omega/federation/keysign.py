"""Hub key announcements, signed with the hub's long-term Ed25519 key.

TVs seal their reports to the hub's current X25519 key, and that key reaches them
through the shards (``GlobalUpdate`` → shard → ``PullResp``). Without a signature a
hostile shard could announce its own key and read every report sealed after it.
So the hub holds a long-term Ed25519 *signing key* (its seed lives in the hub's
replicated state, beside the report key pairs), every announcement carries the
hub's signature, and a TV is provisioned with the hub's *verify key*: it adopts a
new report key only when the signature verifies with it.

What is signed (``announcement_bytes``, 68 bytes)::

    DOMAIN (32 bytes: "omega/hub-key-announcement/v1" zero-padded)
    key id, u32 big-endian
    X25519 public key (32 bytes)

The domain tag keeps the signing key from ever vouching for anything else that
happens to be 36 bytes long. No time or release version is signed: key ids only
grow (each rotation takes the next id), so "newer" is "higher id", and a TV refuses
an announcement whose id is not above its current key's (``StaleAnnouncement``) —
a replayed old announcement cannot roll it back to a retired key. A release
version would add nothing and would force a new signature per release.

Plain functions over bytes; PyNaCl's ``nacl.signing`` does the cryptography.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from omega.errors import ProtocolError
from omega.federation.report import KEY_ID_MAX, HubKey

__all__ = [
    "DOMAIN",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "VERIFY_KEY_BYTES",
    "AnnouncementError",
    "ForgedAnnouncement",
    "HubSigner",
    "MalformedAnnouncement",
    "StaleAnnouncement",
    "UnsignedAnnouncement",
    "UnverifiableAnnouncement",
    "accept_announcement",
    "announcement_bytes",
    "parse_verify_key",
    "verify_announcement",
]

DOMAIN = b"omega/hub-key-announcement/v1".ljust(32, b"\x00")
SEED_BYTES = 32
VERIFY_KEY_BYTES = 32
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
_U32 = struct.Struct(">I")


class AnnouncementError(ProtocolError):
    """A hub key announcement the TV will not adopt; it keeps its current key."""

    code = "bad_request"
    #: Short label for status counters and logs.
    reason = "refused"


class MalformedAnnouncement(AnnouncementError):
    """Wrong length of the key, the signature or the verify key, or a bad key id."""

    reason = "malformed"


class UnsignedAnnouncement(AnnouncementError):
    """The announcement carries no signature (an old hub or shard, or a forger)."""

    reason = "unsigned"


class ForgedAnnouncement(AnnouncementError):
    """The signature does not verify with the hub's verify key: not the hub's key."""

    reason = "bad_signature"


class StaleAnnouncement(AnnouncementError):
    """A genuine announcement, but not newer than the TV's key (a replay, or a shard
    replica that has not caught up): adopting it would roll the TV back."""

    reason = "stale"


class UnverifiableAnnouncement(AnnouncementError):
    """The TV has no verify key provisioned, so it cannot tell the hub's key from a
    shard's: it refuses every rotation and keeps its provisioned key."""

    reason = "no_verify_key"


def _check_key(key_id: int, public: bytes) -> None:
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 < key_id <= KEY_ID_MAX:
        raise MalformedAnnouncement(f"key id must be 1-{KEY_ID_MAX}, got {key_id!r}")
    if not isinstance(public, bytes) or len(public) != PUBLIC_KEY_BYTES:
        n = len(public) if isinstance(public, bytes) else type(public).__name__
        raise MalformedAnnouncement(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {n}")


def announcement_bytes(key_id: int, public: bytes) -> bytes:
    """The exact bytes the hub signs for key ``key_id`` with X25519 key ``public``."""
    _check_key(key_id, public)
    return DOMAIN + _U32.pack(key_id) + public


def parse_verify_key(raw: bytes | str) -> bytes:
    """A verify key from 32 bytes or 64 hex digits (``MalformedAnnouncement``)."""
    if isinstance(raw, str):
        try:
            raw = bytes.fromhex(raw)
        except ValueError:
            raise MalformedAnnouncement("a verify key is 64 hex digits") from None
    if not isinstance(raw, bytes) or len(raw) != VERIFY_KEY_BYTES:
        raise MalformedAnnouncement(f"a verify key is {VERIFY_KEY_BYTES} bytes")
    try:
        VerifyKey(raw)
    except (CryptoError, TypeError, ValueError) as exc:
        raise MalformedAnnouncement(f"not an Ed25519 verify key: {exc}") from None
    return raw


@dataclass(frozen=True)
class HubSigner:
    """The hub's long-term signing key (its 32-byte Ed25519 seed)."""

    seed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise ValueError(f"a signing seed is {SEED_BYTES} bytes")

    @classmethod
    def generate(cls) -> HubSigner:
        return cls(bytes(SigningKey.generate()))

    @property
    def verify_key(self) -> bytes:
        """What TVs are provisioned with (public: printed by ``ctl federation``)."""
        return bytes(SigningKey(self.seed).verify_key)

    def sign(self, key_id: int, public: bytes) -> bytes:
        """The 64-byte signature announcing report key ``key_id``."""
        signed = SigningKey(self.seed).sign(announcement_bytes(key_id, public))
        return bytes(signed.signature)

    def __repr__(self) -> str:  # the seed is a secret: never in a log or a traceback
        return f"HubSigner(verify_key={self.verify_key.hex()[:16]}…)"


def verify_announcement(verify_key: bytes, key_id: int, public: bytes, sig: bytes) -> None:
    """Raise unless ``sig`` is the hub's signature of ``(key_id, public)``.

    ``UnsignedAnnouncement`` (empty signature), ``MalformedAnnouncement`` (wrong
    lengths, a bad key id or verify key), ``ForgedAnnouncement`` (does not verify).
    """
    _check_key(key_id, public)
    if not isinstance(sig, bytes):
        raise MalformedAnnouncement(f"a signature is bytes, not {type(sig).__name__}")
    if not sig:
        raise UnsignedAnnouncement(f"hub key {key_id} is announced without a signature")
    if len(sig) != SIGNATURE_BYTES:
        raise MalformedAnnouncement(f"a signature is {SIGNATURE_BYTES} bytes, got {len(sig)}")
    vk = VerifyKey(parse_verify_key(verify_key))
    try:
        vk.verify(announcement_bytes(key_id, public), sig)
    except (BadSignatureError, CryptoError):
        raise ForgedAnnouncement(f"hub key {key_id}: the signature does not verify with the "
                                 "hub's verify key") from None


def accept_announcement(current: HubKey | None, key_id: int, public: bytes, sig: bytes,
                        verify_key: bytes | None) -> HubKey | None:
    """The TV's rule for a key announced in a pull.

    Returns ``None`` when there is nothing to adopt (no announcement: key id 0; or
    the TV's current key again), the new ``HubKey`` when the announcement is the
    hub's and newer than ``current``. Raises an ``AnnouncementError`` otherwise —
    the TV then keeps ``current``. Without a verify key every rotation is refused
    (``UnverifiableAnnouncement``): the safe default for a TV provisioned before
    announcements were signed.
    """
    if key_id == 0:
        return None
    if current is not None and key_id == current.key_id and public == current.public:
        return None
    _check_key(key_id, public)
    if verify_key is None:
        if current is not None and key_id <= current.key_id:
            # Not a rotation (an older key, e.g. from a lagging replica): nothing to adopt.
            raise StaleAnnouncement(f"hub key {key_id} is not newer than the current key "
                                    f"{current.key_id}")
        raise UnverifiableAnnouncement(
            f"hub key {key_id} announced, but this TV has no hub verify key provisioned "
            "(sync.hub_verify_key): rotations are refused")
    verify_announcement(verify_key, key_id, public, sig)
    if current is not None and key_id <= current.key_id:
        raise StaleAnnouncement(f"hub key {key_id} is not newer than the current key "
                                f"{current.key_id}")
    return HubKey(key_id, public)
