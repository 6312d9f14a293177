"""The hub's replicated state machine: commands, the pure ``apply``, the readers.

The hub is a Raft group (``omega.raft.ReplicatedLmdb``) like a shard. Its leader
does the expensive, non-deterministic work — opening reports with the private key,
drawing the release's noise, embedding new titles — and proposes the results as
commands; ``apply`` only stores and merges them, deterministically, on every
replica. So every replica holds the same received batch ids, sums, accountant,
release, content registry and key pairs, and any of them can take over.

Key layout, one LMDB database ``DB`` (integers big-endian)::

    m:<name>                counters (u64): version, dseq (next delta), key (current id), ...
    b:<batch_id>/<part>     a received batch part: the leader time it came (u64 ms)
    d:<seq u64>             an opened part's sums, not yet folded: [region, sums, window]
    x:sums                  every folded report, summed (CoviewSums bytes)
    w:<region>              the region's trend window (RegionWindow bytes)
    x:accountant            the privacy accountant (PrivacyAccountant bytes)
    x:release               the newest release: [version, made_ms, zstd(msgpack body)]
    x:signer                the hub's long-term Ed25519 signing seed: [seed, created_ms]
    k:<key id u32>          a report key pair: [public, private, created_ms, retired_ms, sig]
                            (sig: the signer's announcement of it; absent in older records)
    c:<content id>          a registered title: [title, metadata json, float16 embedding, ms]

Privacy: nothing here names a device or a shard. Batch ids are hashes of reports;
a delta carries only sums and its region label.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from omega.raft.ports import KvReader, KvWriter

DB = "hub"
DATABASES = (DB,)
COMMAND_VERSION = 1

M_VERSION = b"m:version"
M_DSEQ = b"m:dseq"
M_KEY = b"m:key"
M_BATCHES = b"m:batches"
M_DUPLICATES = b"m:duplicates"
M_REPORTS = b"m:reports"
M_OPENED = b"m:opened"
M_DUMMIES = b"m:dummies"
M_DROPPED = b"m:dropped"
M_RELEASES = b"m:releases"
P_BATCH = b"b:"
P_DELTA = b"d:"
P_WINDOW = b"w:"
P_KEY = b"k:"
P_CONTENT = b"c:"
X_SUMS = b"x:sums"
X_ACCOUNTANT = b"x:accountant"
X_RELEASE = b"x:release"
X_SIGNER = b"x:signer"

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)


class HubCommandError(ValueError):
    """A command could not be decoded; ``apply`` answers it and changes nothing."""


# -- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingest:
    """One opened batch part: its sums (clipped per batch) and its region's counts."""

    TAG = 1
    part_key: str
    region: str
    now_ms: int
    sums: bytes
    window: bytes
    reports: int
    opened: int
    dummies: int
    dropped: int


@dataclass(frozen=True)
class Publish:
    """A release: fold deltas up to ``upto`` (when ``spent``), store the body."""

    TAG = 2
    version: int
    now_ms: int
    #: Deltas with a sequence number up to this one were summed into this release.
    upto: int
    #: Whether the release spent privacy budget (drew noise over new reports); a
    #: release that only announces a new key or titles does not.
    spent: bool
    accountant: bytes
    #: zstd(msgpack([neighbours, popularity, trends, content ids, key id, stats])).
    body: bytes
    #: Received batch ids older than this are forgotten.
    prune_before_ms: int


@dataclass(frozen=True)
class RotateKey:
    """A new current key pair; the previous one retires (still opens for ``grace_ms``).

    ``sig``: the hub signer's announcement of the new key (``keysign``), made by the
    leader outside ``apply``. ``signer``: the signing seed, only when the state holds
    none yet (the first key pair creates the signer); b"" otherwise.
    """

    TAG = 3
    key_id: int
    public: bytes
    private: bytes
    now_ms: int
    grace_ms: int
    sig: bytes = b""
    signer: bytes = b""


@dataclass(frozen=True)
class SignKeys:
    """A hub that made key pairs before it had a signer: the signer (``seed``) and its
    announcements of the kept keys, ``((key_id, sig), ...)``. Applied only while the
    state holds no signer, so it can never replace one."""

    TAG = 5
    now_ms: int
    seed: bytes
    sigs: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class AddContent:
    """Titles for the registry: ``(id, title, metadata json, float16 embedding)``."""

    TAG = 4
    now_ms: int
    items: tuple[tuple[str, str, str, bytes], ...]


Command = Ingest | Publish | RotateKey | AddContent | SignKeys


def encode_command(cmd: Command) -> bytes:
    if isinstance(cmd, Ingest):
        body: list[Any] = [cmd.part_key, cmd.region, cmd.now_ms, cmd.sums, cmd.window,
                           cmd.reports, cmd.opened, cmd.dummies, cmd.dropped]
    elif isinstance(cmd, Publish):
        body = [cmd.version, cmd.now_ms, cmd.upto, cmd.spent, cmd.accountant, cmd.body,
                cmd.prune_before_ms]
    elif isinstance(cmd, RotateKey):
        body = [cmd.key_id, cmd.public, cmd.private, cmd.now_ms, cmd.grace_ms, cmd.sig,
                cmd.signer]
    elif isinstance(cmd, SignKeys):
        body = [cmd.now_ms, cmd.seed, [[k, s] for k, s in cmd.sigs]]
    else:
        body = [cmd.now_ms, [list(i) for i in cmd.items]]
    return pack([cmd.TAG, COMMAND_VERSION, *body])


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("expected a non-negative integer")
    return v


def _bytes(v: Any) -> bytes:
    if not isinstance(v, bytes):
        raise ValueError("expected bytes")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a non-empty string")
    return v


def decode_command(data: bytes) -> Command:
    try:
        obj = unpack(data)
    except Exception as exc:  # msgpack raises several unrelated types
        raise HubCommandError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) < 2 or obj[1] != COMMAND_VERSION:
        raise HubCommandError("expected [tag, version, ...] of this version")
    tag, _, *b = obj
    try:
        if tag == Ingest.TAG:
            return Ingest(_str(b[0]), _str(b[1]), _int(b[2]), _bytes(b[3]), _bytes(b[4]),
                          _int(b[5]), _int(b[6]), _int(b[7]), _int(b[8]))
        if tag == Publish.TAG:
            if not isinstance(b[3], bool):
                raise ValueError("spent must be a bool")
            return Publish(_int(b[0]), _int(b[1]), _int(b[2]), b[3], _bytes(b[4]),
                           _bytes(b[5]), _int(b[6]))
        if tag == RotateKey.TAG:
            # Entries logged before keys were signed have five fields: no sig, no signer.
            return RotateKey(_int(b[0]), _bytes(b[1]), _bytes(b[2]), _int(b[3]), _int(b[4]),
                             _bytes(b[5]) if len(b) > 5 else b"",
                             _bytes(b[6]) if len(b) > 6 else b"")
        if tag == SignKeys.TAG:
            if not isinstance(b[2], list):
                raise ValueError("sigs must be a list")
            sigs = []
            for row in b[2]:
                if not isinstance(row, list) or len(row) != 2:
                    raise ValueError("a signature row is [key id, sig]")
                sigs.append((_int(row[0]), _bytes(row[1])))
            return SignKeys(_int(b[0]), _bytes(b[1]), tuple(sigs))
        if tag == AddContent.TAG:
            items = b[1]
            if not isinstance(items, list):
                raise ValueError("items must be a list")
            rows = []
            for it in items:
                if not isinstance(it, list) or len(it) != 4:
                    raise ValueError("an item is [id, title, metadata, embedding]")
                rows.append((_str(it[0]), _str(it[1]), str(it[2]), _bytes(it[3])))
            return AddContent(_int(b[0]), tuple(rows))
    except (IndexError, TypeError, ValueError) as exc:
        raise HubCommandError(f"malformed command {tag!r}: {exc}") from None
    raise HubCommandError(f"unknown command tag {tag!r}")


# -- readers ----------------------------------------------------------------------------


def _get_u64(kv: KvReader, key: bytes) -> int:
    raw = kv.get(DB, key)
    return int(_U64.unpack(raw)[0]) if raw is not None else 0


def _add_u64(kv: KvWriter, key: bytes, delta: int) -> int:
    value = max(0, _get_u64(kv, key) + delta)
    kv.put(DB, key, _U64.pack(value))
    return value


def version(kv: KvReader) -> int:
    """The newest release's version (0: none yet)."""
    return _get_u64(kv, M_VERSION)


def counters(kv: KvReader) -> dict[str, int]:
    names = ("version", "dseq", "key", "batches", "duplicates", "reports", "opened",
             "dummies", "dropped", "releases")
    return {n: _get_u64(kv, b"m:" + n.encode()) for n in names}


def has_batch(kv: KvReader, part_key: str) -> bool:
    return kv.get(DB, P_BATCH + part_key.encode()) is not None


@dataclass(frozen=True)
class KeyRecord:
    key_id: int
    public: bytes
    private: bytes
    created_ms: int
    retired_ms: int
    #: The hub signer's announcement of this key (b"": made before the hub had one).
    sig: bytes = b""


def keys(kv: KvReader) -> list[KeyRecord]:
    out = []
    for k, v in kv.iterate(DB, P_KEY):
        public, private, created, retired, *rest = unpack(v)
        out.append(KeyRecord(_U32.unpack(k[len(P_KEY):])[0], public, private, created, retired,
                             bytes(rest[0]) if rest else b""))
    return out


def signer_seed(kv: KvReader) -> bytes | None:
    """The hub's long-term signing seed (32 bytes), or None before the first key pair."""
    raw = kv.get(DB, X_SIGNER)
    if raw is None:
        return None
    seed, _ = unpack(raw)
    return bytes(seed)


def current_key(kv: KvReader) -> KeyRecord | None:
    kid = _get_u64(kv, M_KEY)
    return next((k for k in keys(kv) if k.key_id == kid), None) if kid else None


def deltas(kv: KvReader, upto: int | None = None) -> Iterator[tuple[int, str, bytes, bytes]]:
    """Pending deltas ``(seq, region, sums, window)`` in order (up to ``upto``)."""
    for k, v in kv.iterate(DB, P_DELTA):
        seq = _U64.unpack(k[len(P_DELTA):])[0]
        if upto is not None and seq > upto:
            return
        region, sums, window = unpack(v)
        yield seq, region, sums, window


def folded_sums(kv: KvReader) -> bytes | None:
    return kv.get(DB, X_SUMS)


def windows(kv: KvReader) -> dict[str, bytes]:
    return {k[len(P_WINDOW):].decode(): v for k, v in kv.iterate(DB, P_WINDOW)}


def accountant(kv: KvReader) -> bytes | None:
    return kv.get(DB, X_ACCOUNTANT)


def release(kv: KvReader) -> tuple[int, int, bytes] | None:
    """``(version, made_ms, body)`` of the newest release, or None."""
    raw = kv.get(DB, X_RELEASE)
    if raw is None:
        return None
    version, made, body = unpack(raw)
    return version, made, body


@dataclass(frozen=True)
class ContentRecord:
    id: str
    title: str
    metadata: str
    embedding: bytes
    added_ms: int


def content(kv: KvReader) -> Iterator[ContentRecord]:
    for k, v in kv.iterate(DB, P_CONTENT):
        title, meta, emb, added = unpack(v)
        yield ContentRecord(k[len(P_CONTENT):].decode(), title, meta, emb, added)


def content_item(kv: KvReader, cid: str) -> ContentRecord | None:
    raw = kv.get(DB, P_CONTENT + cid.encode())
    if raw is None:
        return None
    title, meta, emb, added = unpack(raw)
    return ContentRecord(cid, title, meta, emb, added)


# -- apply -------------------------------------------------------------------------------

#: ``merge(folded sums or None, deltas' sums, folded windows, deltas' windows by region,
#: roll) -> (sums, windows)``: the federation maths, passed in so that this module
#: stays free of it (``omega.federation.hubmath.fold``).
FoldFn = Callable[[bytes | None, list[bytes], dict[str, bytes], dict[str, list[bytes]], bool],
                  tuple[bytes, dict[str, bytes]]]


def make_apply(fold: FoldFn) -> Callable[[KvWriter, bytes, int], Any]:
    """The hub's ``apply`` with its fold (sums merge) function."""

    def apply(kv: KvWriter, command: bytes, index: int) -> Any:
        try:
            cmd = decode_command(command)
        except HubCommandError as exc:
            return ("error", str(exc))
        if isinstance(cmd, Ingest):
            return _ingest(kv, cmd)
        if isinstance(cmd, Publish):
            return _publish(kv, cmd, fold)
        if isinstance(cmd, RotateKey):
            return _rotate(kv, cmd)
        if isinstance(cmd, SignKeys):
            return _sign_keys(kv, cmd)
        return _add_content(kv, cmd)

    return apply


def _ingest(kv: KvWriter, cmd: Ingest) -> tuple[str, int]:
    key = P_BATCH + cmd.part_key.encode()
    if kv.get(DB, key) is not None:
        _add_u64(kv, M_DUPLICATES, 1)
        return ("duplicate", 0)
    kv.put(DB, key, _U64.pack(cmd.now_ms))
    seq = _add_u64(kv, M_DSEQ, 1)
    kv.put(DB, P_DELTA + _U64.pack(seq), pack([cmd.region, cmd.sums, cmd.window]))
    _add_u64(kv, M_BATCHES, 1)
    _add_u64(kv, M_REPORTS, cmd.reports)
    _add_u64(kv, M_OPENED, cmd.opened)
    _add_u64(kv, M_DUMMIES, cmd.dummies)
    _add_u64(kv, M_DROPPED, cmd.dropped)
    return ("stored", seq)


def _publish(kv: KvWriter, cmd: Publish, fold: FoldFn) -> tuple[str, int]:
    current = _get_u64(kv, M_VERSION)
    if cmd.version != current + 1:
        return ("stale", current)  # another leader published this version first
    if cmd.spent:
        pending = list(deltas(kv, cmd.upto))
        by_region: dict[str, list[bytes]] = {}
        for _, region, _, window in pending:
            by_region.setdefault(region, []).append(window)
        sums, wins = fold(folded_sums(kv), [d[2] for d in pending], windows(kv), by_region, True)
        kv.put(DB, X_SUMS, sums)
        for region, raw in wins.items():
            kv.put(DB, P_WINDOW + region.encode(), raw)
        for seq, *_ in pending:
            kv.delete(DB, P_DELTA + _U64.pack(seq))
        kv.put(DB, X_ACCOUNTANT, cmd.accountant)
    kv.put(DB, X_RELEASE, pack([cmd.version, cmd.now_ms, cmd.body]))
    kv.put(DB, M_VERSION, _U64.pack(cmd.version))
    _add_u64(kv, M_RELEASES, 1)
    old = [k for k, v in kv.iterate(DB, P_BATCH) if _U64.unpack(v)[0] < cmd.prune_before_ms]
    for k in old:
        kv.delete(DB, k)
    return ("published", cmd.version)


def _rotate(kv: KvWriter, cmd: RotateKey) -> tuple[str, int]:
    if kv.get(DB, P_KEY + _U32.pack(cmd.key_id)) is not None or cmd.key_id == 0:
        return ("exists", cmd.key_id)
    held = signer_seed(kv)
    if cmd.signer and held is not None and cmd.signer != held:
        # Two leaders each made a signer (a stale read): the first one stays, and this
        # key's signature is by the other one, so the key is refused; the leader retries.
        return ("signer_mismatch", cmd.key_id)
    if cmd.signer and held is None:
        kv.put(DB, X_SIGNER, pack([cmd.signer, cmd.now_ms]))
    for rec in keys(kv):
        if rec.retired_ms == 0:
            _put_key(kv, replace(rec, retired_ms=cmd.now_ms))
        elif cmd.now_ms - rec.retired_ms > cmd.grace_ms:
            kv.delete(DB, P_KEY + _U32.pack(rec.key_id))  # past its grace: gone
    _put_key(kv, KeyRecord(cmd.key_id, cmd.public, cmd.private, cmd.now_ms, 0, cmd.sig))
    kv.put(DB, M_KEY, _U64.pack(cmd.key_id))
    return ("rotated", cmd.key_id)


def _sign_keys(kv: KvWriter, cmd: SignKeys) -> tuple[str, int]:
    if signer_seed(kv) is not None:
        return ("exists", 0)
    kv.put(DB, X_SIGNER, pack([cmd.seed, cmd.now_ms]))
    held = {rec.key_id: rec for rec in keys(kv)}
    signed = 0
    for key_id, sig in cmd.sigs:
        rec = held.get(key_id)
        if rec is not None:
            _put_key(kv, replace(rec, sig=sig))
            signed += 1
    return ("signed", signed)


def _put_key(kv: KvWriter, rec: KeyRecord) -> None:
    kv.put(DB, P_KEY + _U32.pack(rec.key_id),
           pack([rec.public, rec.private, rec.created_ms, rec.retired_ms, rec.sig]))


def _add_content(kv: KvWriter, cmd: AddContent) -> tuple[str, int]:
    for cid, title, meta, emb in cmd.items:
        kv.put(DB, P_CONTENT + cid.encode(), pack([title, meta, emb, cmd.now_ms]))
    return ("added", len(cmd.items))
