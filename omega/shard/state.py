"""The shard's replicated state: key layout, the pure ``apply`` and its readers.

``apply(kv, command, index)`` runs on every replica, in Raft log order, inside the
LMDB transaction that records the applied index. It is deterministic — it reads
nothing but the command, the index and the store; no clock, no randomness, no
settings — so every replica ends in the same state. A malformed command is
answered and changes nothing; ``apply`` never raises for bad input.

Key layout, one LMDB database ``DB`` (integers big-endian so that byte order is
numeric order)::

    m:<name>                     counters and meta (u64)
    m:part:<base u64><part u32>  parts received of the newest global release, per content base
    d:<dhash 32>                 device record: [last_seq, digest, ack_cursor, last_ms, pushes]
    r:<dhash 32>                 registry: 1 provisioned, 2 revoked
    a:<raft address>             device-facing address of that node
    b:<bucket u64>               report bucket header: [devices, reports, closed, bytes]
    bm:<bucket u64><h 16>        "some device fed this bucket" (h = H(bucket, dhash)), until closed
    q:<bucket u64><h 16>         one sealed report, opaque (h = H(index, position, report))
    g:<kind 1><id>               global record: [cursor, value]  (kind: n p r c k, see KIND_*)
    v:<cursor u64>               change index: <kind><id> changed at that cursor

Privacy: a report is stored under a key derived from the Raft index and its own
bytes, in a bucket — never next to the device's keyed hash — so storage cannot say
which device sent which report, and key order inside a bucket (the order
``take_batch`` returns) is unrelated to arrival order.

Global versions: every record change of a global release gets the next value of
a change cursor (``m:cursor``). The cursor is the "global version" devices see
(in ``PushAck``, ``PullResp``, ``HeartbeatAck``): a pull since cursor ``c`` gets
the records changed after ``c``, oldest first, and the cursor of the last one it
got — so a long delta is fetched in bounded pieces and no piece is sent twice.
All replicas of a shard apply the same log, so the cursor means the same on each.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omega.raft.ports import KvReader, KvWriter
from omega.shard.commands import (
    RECORD_KINDS,
    Advertise,
    CloseOpen,
    CommandError,
    PushBatch,
    Registry,
    ReleaseBatch,
    SetGlobal,
    decode_command,
)
from omega.shard.commands import pack as _pack
from omega.shard.commands import unpack as _unpack

#: The LMDB database the shard keeps everything in (pass ``DATABASES`` to the store).
DB = "main"
DATABASES = (DB,)

# -- keys --------------------------------------------------------------------------

M_CURSOR = b"m:cursor"  # device-facing global version
M_RELEASE = b"m:release"  # newest hub release version seen (maybe partial)
M_RELEASE_DONE = b"m:release_done"  # newest release with all parts applied
M_PUSHES = b"m:pushes"  # pushes applied, ever
M_DUPLICATES = b"m:duplicates"  # pushes skipped as already applied
M_REPORTS = b"m:reports"  # reports currently stored (not yet forwarded)
M_REPORTS_TOTAL = b"m:reports_total"
M_OPEN = b"m:open_bucket"
P_PART = b"m:part:"

P_DEVICE = b"d:"
P_REGISTRY = b"r:"
P_ADVERT = b"a:"
P_BUCKET = b"b:"
P_MEMBER = b"bm:"
P_REPORT = b"q:"
P_GLOBAL = b"g:"
P_CHANGE = b"v:"

#: Global record kinds: per-title neighbour list, per-title popularity, per-region
#: trends, new content (title and embedding), the hub's report key (one record).
KIND_NEIGHBOURS, KIND_POPULARITY, KIND_TRENDS, KIND_CONTENT, KIND_HUB_KEY = RECORD_KINDS
#: The key of the one ``KIND_HUB_KEY`` record: value ``[key_id, public_key, hub_sig]``
#: (older records: ``[key_id, public_key]``).
HUB_KEY_RECORD = b"hub"

REGISTERED, REVOKED = 1, 2

_U64 = struct.Struct(">Q")


def u64(n: int) -> bytes:
    return _U64.pack(n)


def _get_u64(kv: KvReader, key: bytes) -> int:
    raw = kv.get(DB, key)
    return int(_U64.unpack(raw)[0]) if raw is not None else 0


def _add_u64(kv: KvWriter, key: bytes, delta: int) -> int:
    value = max(0, _get_u64(kv, key) + delta)
    kv.put(DB, key, u64(value))
    return value


def _keys(kv: KvReader, prefix: bytes) -> list[bytes]:
    # Collected before any write: an LMDB cursor must not see its db change under it.
    return [k for k, _ in kv.iterate(DB, prefix)]


# -- records -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRecord:
    """What the shard remembers of a device (by keyed hash): enough to de-duplicate."""

    last_seq: int
    digest: bytes
    #: Global version (cursor) returned in the ack of ``last_seq``: a retry gets the same.
    ack_version: int
    #: Leader wall time (ms) when ``last_seq`` was applied: the rate limit's clock.
    last_ms: int
    pushes: int


@dataclass(frozen=True)
class Bucket:
    bucket: int
    devices: int
    reports: int
    #: Closed once k distinct devices fed it: forwardable, takes no more reports.
    closed: bool
    nbytes: int


@dataclass(frozen=True)
class ReportBatch:
    """A closed bucket ready to forward: reports of ≥ k devices, no identities."""

    bucket: int
    devices: int
    reports: tuple[bytes, ...]


@dataclass(frozen=True)
class PushOutcome:
    """What applying one push did. ``status``: applied, duplicate, conflict or stale."""

    status: str
    seq: int
    #: The global version to put in the ack (the original one for a duplicate).
    version: int


@dataclass(frozen=True)
class Change:
    """One global record as of ``cursor`` (an empty ``value``: removed)."""

    kind: bytes
    key: bytes
    cursor: int
    value: bytes


def device_record(kv: KvReader, dhash: bytes) -> DeviceRecord | None:
    raw = kv.get(DB, P_DEVICE + dhash)
    if raw is None:
        return None
    last_seq, digest, ack_version, last_ms, pushes = _unpack(raw)
    return DeviceRecord(last_seq, digest, ack_version, last_ms, pushes)


def registry_status(kv: KvReader, dhash: bytes) -> int:
    """``REGISTERED``, ``REVOKED`` or 0 (never provisioned)."""
    raw = kv.get(DB, P_REGISTRY + dhash)
    return raw[0] if raw else 0


def global_version(kv: KvReader) -> int:
    """The device-facing global version: the change cursor."""
    return _get_u64(kv, M_CURSOR)


def stored_reports(kv: KvReader) -> int:
    """Reports waiting to be forwarded."""
    return _get_u64(kv, M_REPORTS)


def counters(kv: KvReader) -> dict[str, int]:
    return {
        "global_version": global_version(kv),
        "release": _get_u64(kv, M_RELEASE),
        "release_complete": _get_u64(kv, M_RELEASE_DONE),
        "pushes": _get_u64(kv, M_PUSHES),
        "duplicates": _get_u64(kv, M_DUPLICATES),
        "reports_stored": _get_u64(kv, M_REPORTS),
        "reports_total": _get_u64(kv, M_REPORTS_TOTAL),
        "open_bucket": _get_u64(kv, M_OPEN),
    }


def advertised(kv: KvReader) -> dict[str, str]:
    """Raft address → device-facing address, as the nodes advertised them."""
    return {k[len(P_ADVERT):].decode(): v.decode() for k, v in kv.iterate(DB, P_ADVERT)}


def buckets(kv: KvReader) -> Iterator[Bucket]:
    for key, raw in kv.iterate(DB, P_BUCKET):
        devices, reports, closed, nbytes = _unpack(raw)
        yield Bucket(_U64.unpack(key[len(P_BUCKET):])[0], devices, reports, bool(closed), nbytes)


def take_batch(kv: KvReader, min_devices: int) -> ReportBatch | None:
    """The oldest closed bucket fed by at least ``min_devices`` devices, or None.

    Reading does not remove it: the forwarder submits ``ReleaseBatch`` once the
    batch is safely upstream, so a crash in between forwards it again (the
    receiver de-duplicates by batch id).
    """
    for b in buckets(kv):
        if b.closed and b.devices >= min_devices:
            prefix = P_REPORT + u64(b.bucket)
            return ReportBatch(b.bucket, b.devices, tuple(v for _, v in kv.iterate(DB, prefix)))
    return None


def all_reports(kv: KvReader) -> Iterator[bytes]:
    """Every stored report, closed bucket or not (tests and audits)."""
    for _, v in kv.iterate(DB, P_REPORT):
        yield v


def global_record(kv: KvReader, kind: bytes, key: bytes) -> Change | None:
    raw = kv.get(DB, P_GLOBAL + kind + key)
    if raw is None:
        return None
    cursor, value = _unpack(raw)
    return Change(kind, key, cursor, value)


def hub_key(kv: KvReader) -> tuple[int, bytes, bytes]:
    """The hub's current report key as the newest release announced it, with the hub's
    signature over it: ``(key_id, public, sig)``, or ``(0, b"", b"")``. A record
    stored before announcements were signed has no signature (b"")."""
    rec = global_record(kv, KIND_HUB_KEY, HUB_KEY_RECORD)
    if rec is None or not rec.value:
        return 0, b"", b""
    key_id, public, *rest = _unpack(rec.value)
    return int(key_id), bytes(public), bytes(rest[0]) if rest else b""


def changes_since(kv: KvReader, cursor: int) -> Iterator[Change]:
    """Global records changed after ``cursor``, in cursor order."""
    for _, ref in kv.iterate(DB, P_CHANGE, P_CHANGE + u64(cursor + 1)):
        rec = global_record(kv, ref[:1], ref[1:])
        if rec is not None:
            yield rec


# -- apply ---------------------------------------------------------------------------


def apply(kv: KvWriter, command: bytes, index: int) -> Any:
    """Apply one committed command; deterministic, never raises for bad input.

    Returns, for a ``PushBatch``, one ``PushOutcome`` per entry in order; for other
    commands a small tuple saying what happened; ``("error", message)`` for a
    command that could not be decoded (nothing changed).
    """
    try:
        cmd = decode_command(command)
    except CommandError as exc:
        return ("error", str(exc))
    if isinstance(cmd, PushBatch):
        return _apply_pushes(kv, cmd, index)
    if isinstance(cmd, SetGlobal):
        return _apply_global(kv, cmd)
    if isinstance(cmd, Advertise):
        key = P_ADVERT + cmd.raft_address.encode()
        if kv.get(DB, key) != cmd.device_address.encode():
            kv.put(DB, key, cmd.device_address.encode())
        return ("ok",)
    if isinstance(cmd, Registry):
        for h in cmd.add:
            if registry_status(kv, h) != REVOKED:  # a revocation is final
                kv.put(DB, P_REGISTRY + h, bytes([REGISTERED]))
        for h in cmd.revoke:
            kv.put(DB, P_REGISTRY + h, bytes([REVOKED]))
        return ("ok", len(cmd.add), len(cmd.revoke))
    if isinstance(cmd, ReleaseBatch):
        return _release(kv, cmd.bucket)
    assert isinstance(cmd, CloseOpen)
    return _close_open(kv, cmd.min_devices)


def _apply_pushes(kv: KvWriter, cmd: PushBatch, index: int) -> list[PushOutcome]:
    # Counters and the open bucket's header are read once and written once per batch:
    # per push, only its device record, its bucket membership and its reports.
    version = global_version(kv)
    bucket = _get_u64(kv, M_OPEN)
    header = _bucket_header(kv, bucket)
    dirty = False
    out: list[PushOutcome] = []
    applied = dups = stored = 0
    for pos, e in enumerate(cmd.entries):
        rec = device_record(kv, e.dhash)
        if rec is not None and e.seq <= rec.last_seq:
            if e.seq < rec.last_seq:
                out.append(PushOutcome("stale", e.seq, rec.ack_version))
            elif e.digest != rec.digest:
                out.append(PushOutcome("conflict", e.seq, rec.ack_version))
            else:
                # Exactly once: the same push again (a retry after a leader change).
                out.append(PushOutcome("duplicate", e.seq, rec.ack_version))
                dups += 1
            continue
        pushes = (rec.pushes if rec else 0) + 1
        kv.put(DB, P_DEVICE + e.dhash, _pack([e.seq, e.digest, version, cmd.now_ms, pushes]))
        out.append(PushOutcome("applied", e.seq, version))
        applied += 1
        if not e.reports:
            continue
        b = u64(bucket)
        member = P_MEMBER + b + hashlib.sha256(b + e.dhash).digest()[:16]
        if kv.get(DB, member) is None:
            kv.put(DB, member, b"\x01")
            header[0] += 1
        for i, r in enumerate(e.reports):
            h = hashlib.sha256(u64(index) + pos.to_bytes(4, "big") + i.to_bytes(2, "big") + r)
            kv.put(DB, P_REPORT + b + h.digest()[:16], r)
        header[1] += len(e.reports)
        header[3] += sum(len(r) for r in e.reports)
        stored += len(e.reports)
        dirty = True
        if header[0] >= cmd.bucket_devices:
            _close(kv, bucket, header)
            bucket, header, dirty = bucket + 1, [0, 0, 0, 0], False
    if dirty:
        kv.put(DB, P_BUCKET + u64(bucket), _pack(header))
    if applied:
        _add_u64(kv, M_PUSHES, applied)
    if dups:
        _add_u64(kv, M_DUPLICATES, dups)
    if stored:
        _add_u64(kv, M_REPORTS, stored)
        _add_u64(kv, M_REPORTS_TOTAL, stored)
    return out


def _bucket_header(kv: KvReader, bucket: int) -> list[Any]:
    raw = kv.get(DB, P_BUCKET + u64(bucket))
    return list(_unpack(raw)) if raw is not None else [0, 0, 0, 0]


def _close(kv: KvWriter, bucket: int, header: list[Any]) -> None:
    header[2] = 1
    kv.put(DB, P_BUCKET + u64(bucket), _pack(header))
    # Membership hashes only counted distinct devices; a closed bucket forgets them.
    for key in _keys(kv, P_MEMBER + u64(bucket)):
        kv.delete(DB, key)
    kv.put(DB, M_OPEN, u64(bucket + 1))


def _close_open(kv: KvWriter, min_devices: int) -> tuple[str, int]:
    bucket = _get_u64(kv, M_OPEN)
    header = _bucket_header(kv, bucket)
    if header[0] < min_devices or header[0] == 0:
        return ("open", bucket)
    _close(kv, bucket, header)
    return ("closed", bucket)


def _release(kv: KvWriter, bucket: int) -> tuple[str, int]:
    raw = kv.get(DB, P_BUCKET + u64(bucket))
    if raw is None:
        return ("absent", 0)
    if not _unpack(raw)[2]:
        return ("open", 0)
    keys = _keys(kv, P_REPORT + u64(bucket))
    for k in keys:
        kv.delete(DB, k)
    kv.delete(DB, P_BUCKET + u64(bucket))
    _add_u64(kv, M_REPORTS, -len(keys))
    return ("released", len(keys))


def _apply_global(kv: KvWriter, cmd: SetGlobal) -> tuple[str, int]:
    release = _get_u64(kv, M_RELEASE)
    # A release comes as one part set per content base (the broadcast's, a catch-up's):
    # its parts are told apart by (base, part), and each set completes on its own.
    part_set = P_PART + u64(cmd.base)
    part_key = part_set + cmd.part.to_bytes(4, "big")
    if cmd.version < release or (cmd.version == release and kv.get(DB, part_key)):
        return ("stale", global_version(kv))  # an old or repeated part: idempotent
    if cmd.version > release:
        for key in _keys(kv, P_PART):
            kv.delete(DB, key)
        kv.put(DB, M_RELEASE, u64(cmd.version))
    kv.put(DB, part_key, b"\x01")
    cursor = global_version(kv)
    for kind, key, value in cmd.records:
        old = global_record(kv, kind, key)
        if old is not None:
            if old.value == value:
                continue
            kv.delete(DB, P_CHANGE + u64(old.cursor))
        elif not value:
            continue  # removing what never existed
        cursor += 1
        kv.put(DB, P_GLOBAL + kind + key, _pack([cursor, value]))
        kv.put(DB, P_CHANGE + u64(cursor), kind + key)
    kv.put(DB, M_CURSOR, u64(cursor))
    # Complete only with every part of the set and, for content sent as changes since
    # release ``base``, every release up to the base: else titles of a release this
    # shard missed would never arrive (catch-up asks again from the last complete one).
    if (len(_keys(kv, part_set)) >= cmd.parts
            and (cmd.base == 0 or _get_u64(kv, M_RELEASE_DONE) >= cmd.base)):
        kv.put(DB, M_RELEASE_DONE, u64(cmd.version))
    return ("applied", cursor)
