"""The shard's Raft commands: frozen records and their msgpack encoding.

A command is what the leader proposes and every replica applies (``state.apply``).
It carries everything ``apply`` needs — the leader's wall time, the bucket size —
so that applying it is deterministic on every replica whatever its own settings
or clock. Encoded as a msgpack array ``[tag, version, ...fields]``; never pickle.

No device identity appears in a command: pushes carry ``dhash``, the keyed hash
``HMAC(dedup_secret, device_id)``, which de-duplicates and rate-limits without
naming the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

COMMAND_VERSION = 1

DHASH_LEN = 32
DIGEST_LEN = 16
#: Global record kinds (see ``state``): neighbours, popularity, trends, content, and
#: the hub's current report key.
RECORD_KINDS = (b"n", b"p", b"r", b"c", b"k")
MAX_RECORD_KEY = 255


def pack(obj: Any) -> bytes:
    """msgpack, binary-safe: the shard's one serialisation for commands and records."""
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True)


class CommandError(ValueError):
    """A command could not be decoded. ``apply`` answers it and changes nothing."""


@dataclass(frozen=True)
class PushEntry:
    """One accepted push: who (keyed hash), which sequence number, what (opaque)."""

    dhash: bytes
    seq: int
    #: Hash of the push's sealed reports: a retry must carry the same ones.
    digest: bytes
    reports: tuple[bytes, ...]


@dataclass(frozen=True)
class PushBatch:
    """Many pushes in one Raft entry (group commit)."""

    TAG = 1
    #: The leader's wall time when it proposed the batch (rate-limit records).
    now_ms: int
    #: A report bucket is closed (forwardable) once this many distinct devices fed it (k).
    bucket_devices: int
    entries: tuple[PushEntry, ...]


@dataclass(frozen=True)
class SetGlobal:
    """One part of a global release: records pulls are served from.

    ``records`` are ``(kind, key, value)``: kind is one byte (``state.KIND_*``), key
    an id (title, region, content), value the encoded record; an empty value
    removes the key.
    """

    TAG = 2
    #: The hub's release version.
    version: int
    part: int
    parts: int
    records: tuple[tuple[bytes, bytes, bytes], ...] = ()
    #: The release's ``content_base``: its content is what changed since release
    #: ``base`` (0: the whole registry). Parts are told apart by (base, part).
    base: int = 0


@dataclass(frozen=True)
class Advertise:
    """Node ``raft_address`` serves devices at ``device_address``."""

    TAG = 3
    raft_address: str
    device_address: str


@dataclass(frozen=True)
class Registry:
    """Provision (``add``) or revoke device keyed hashes."""

    TAG = 4
    add: tuple[bytes, ...] = ()
    revoke: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ReleaseBatch:
    """The closed report bucket ``bucket`` was forwarded and stored upstream: delete it."""

    TAG = 5
    bucket: int


@dataclass(frozen=True)
class CloseOpen:
    """Close the open bucket now if at least ``min_devices`` devices fed it (a forward
    on demand need not wait for the bucket to fill)."""

    TAG = 6
    min_devices: int


Command = PushBatch | SetGlobal | Advertise | Registry | ReleaseBatch | CloseOpen


def encode_command(cmd: Command) -> bytes:
    body: list[Any]
    if isinstance(cmd, PushBatch):
        body = [cmd.now_ms, cmd.bucket_devices,
                [[e.dhash, e.seq, e.digest, list(e.reports)] for e in cmd.entries]]
    elif isinstance(cmd, SetGlobal):
        body = [cmd.version, cmd.part, cmd.parts, [list(r) for r in cmd.records], cmd.base]
    elif isinstance(cmd, Advertise):
        body = [cmd.raft_address, cmd.device_address]
    elif isinstance(cmd, Registry):
        body = [list(cmd.add), list(cmd.revoke)]
    elif isinstance(cmd, ReleaseBatch):
        body = [cmd.bucket]
    else:
        body = [cmd.min_devices]
    return pack([cmd.TAG, COMMAND_VERSION, *body])


def decode_command(data: bytes) -> Command:
    """Decode one command; raise ``CommandError`` for anything malformed."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CommandError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) < 2:
        raise CommandError("expected [tag, version, ...]")
    tag, version, *body = obj
    if version != COMMAND_VERSION:
        raise CommandError(f"unknown command version {version!r}")
    try:
        return _DECODERS[tag](body)
    except KeyError:
        raise CommandError(f"unknown command tag {tag!r}") from None
    except (TypeError, ValueError) as exc:
        raise CommandError(f"malformed command {tag!r}: {exc}") from None


def _int(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"expected an integer in [{lo}, {hi}]")
    return v


def _bytes(v: Any, length: int | None = None) -> bytes:
    if not isinstance(v, bytes) or (length is not None and len(v) != length):
        raise ValueError("expected bytes" + (f" of length {length}" if length else ""))
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected a string")
    return v


def _push_batch(body: list[Any]) -> PushBatch:
    now_ms, k, entries = body
    if not isinstance(entries, list):
        raise ValueError("entries must be a list")
    out = []
    for e in entries:
        if not isinstance(e, list) or len(e) != 4 or not isinstance(e[3], list):
            raise ValueError("entry must be [dhash, seq, digest, [reports]]")
        out.append(PushEntry(_bytes(e[0], DHASH_LEN), _int(e[1]), _bytes(e[2], DIGEST_LEN),
                             tuple(_bytes(r) for r in e[3])))
    return PushBatch(_int(now_ms), _int(k, 1), tuple(out))


def _set_global(body: list[Any]) -> SetGlobal:
    # Four elements: a command logged before content bases existed (the whole registry).
    version, part, parts, records, base = body if len(body) == 5 else [*body, 0]
    if not isinstance(records, list):
        raise ValueError("records must be a list")
    out = []
    for r in records:
        if not isinstance(r, list) or len(r) != 3:
            raise ValueError("record must be [kind, key, value]")
        kind, key = _bytes(r[0], 1), _bytes(r[1])
        if kind not in RECORD_KINDS or not 1 <= len(key) <= MAX_RECORD_KEY:
            raise ValueError(f"bad record kind {kind!r} or key length {len(key)}")
        out.append((kind, key, _bytes(r[2])))
    parts = _int(parts, 1, 65535)
    version = _int(version, 1)
    return SetGlobal(version, _int(part, 0, parts - 1), parts, tuple(out),
                     _int(base, 0, version - 1))


def _advertise(body: list[Any]) -> Advertise:
    raft_address, device_address = body
    return Advertise(_str(raft_address), _str(device_address))


def _registry(body: list[Any]) -> Registry:
    add, revoke = body
    if not isinstance(add, list) or not isinstance(revoke, list):
        raise ValueError("expected two lists")
    return Registry(tuple(_bytes(x, DHASH_LEN) for x in add),
                    tuple(_bytes(x, DHASH_LEN) for x in revoke))


def _release(body: list[Any]) -> ReleaseBatch:
    (bucket,) = body
    return ReleaseBatch(_int(bucket))


def _close(body: list[Any]) -> CloseOpen:
    (min_devices,) = body
    return CloseOpen(_int(min_devices, 1))


_DECODERS: dict[Any, Callable[[list[Any]], Command]] = {
    PushBatch.TAG: _push_batch,
    SetGlobal.TAG: _set_global,
    Advertise.TAG: _advertise,
    Registry.TAG: _registry,
    ReleaseBatch.TAG: _release,
    CloseOpen.TAG: _close,
}
