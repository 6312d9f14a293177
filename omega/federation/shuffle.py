"""The regional aggregator: a durable shuffler of sealed batches it cannot open.

``ShuffleStore`` keeps, in one LMDB file (every commit synced before it returns):

- ``seen``: every received ``(batch_id, part)`` with the time it came, so a batch a
  shard sends again (it crashed before it released it) is stored once; pruned
  after ``retention_s``;
- ``held``: received reports, one record per part, until they are mixed;
- ``out``: mixes composed from held parts and not yet acknowledged by the hub.

``mix`` moves every held part into one new mix in a single transaction: the
reports of all shards together, shuffled (CSPRNG), cut into parts, under a
content-addressed id. A mix is sent until the hub acknowledges each part, then
deleted. A crash anywhere loses nothing (a held part is either still held or in
a stored mix) and doubles nothing (a resent part keeps its id; the hub stores
``(batch_id, part)`` once). Nothing here names a shard: ids are hashes of
reports, and the hub hears only the region label.
"""

from __future__ import annotations

import random
import secrets
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from omega.errors import StoreError
from omega.federation.report import REPORT_BYTES, REPORT_FORMAT

from .batches import batch_id, split_parts
from .hub import pack as _pack
from .hub import unpack as _unpack

_U64 = struct.Struct(">Q")
_META_NEXT = b"next"
_META_TOTAL = b"received_total"
_META_MIXES = b"mixes_total"
_META_FORWARDED = b"forwarded_total"
_META_DROPPED = b"dropped_total"


class ShuffleFull(StoreError):
    """The aggregator holds as many reports as it may: the sender retries later."""


@dataclass(frozen=True)
class OutPart:
    """One part of a mix waiting for the hub's acknowledgement."""

    batch_id: str
    part: int
    parts: int
    reports: tuple[bytes, ...]


def well_formed(report: bytes) -> bool:
    """What the aggregator can check of a report without opening it: its size and format."""
    return len(report) == REPORT_BYTES and report[0] == REPORT_FORMAT


class ShuffleStore:
    """Held batches and pending mixes of one aggregator, durable in LMDB. Thread-safe."""

    def __init__(self, path: Path, *, map_size: int = 1 << 30, max_held_reports: int = 5_000_000,
                 retention_s: float = 7 * 86400.0, fsync: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), subdir=False, map_size=map_size, max_dbs=4,
                              sync=fsync, metasync=fsync)
        self._seen = self._env.open_db(b"seen")
        self._held = self._env.open_db(b"held")
        self._out = self._env.open_db(b"out")
        self._meta = self._env.open_db(b"meta")
        self._lock = threading.Lock()
        self._max_held = max_held_reports
        self._retention_ms = int(retention_s * 1000)

    def close(self) -> None:
        with self._lock:
            self._env.close()

    # -- receive -------------------------------------------------------------------

    def receive(self, bid: str, part: int, reports: Sequence[bytes], now_ms: int) -> bool:
        """Store one received part durably; False if it was already received (a retry).

        Malformed reports (wrong size or format) are dropped and counted: the hub
        could not open them either. Raises ``ShuffleFull`` when storage is full.
        """
        key = f"{bid}/{part}".encode()
        good = [bytes(r) for r in reports if well_formed(r)]
        with self._lock, self._env.begin(write=True) as txn:
            if txn.get(key, db=self._seen) is not None:
                return False
            if self._held_reports(txn) + len(good) > self._max_held:
                raise ShuffleFull("the aggregator is full; forwarding to the hub is behind")
            seq = self._bump(txn, _META_NEXT, 1)
            txn.put(key, _U64.pack(now_ms), db=self._seen)
            if good:
                txn.put(_U64.pack(seq), _pack([now_ms, good]), db=self._held)
            self._bump(txn, _META_TOTAL, len(good))
            self._bump(txn, b"held_reports", len(good))
            if len(good) != len(reports):
                self._bump(txn, _META_DROPPED, len(reports) - len(good))
        return True

    # -- mix -----------------------------------------------------------------------

    def due(self, now_ms: int, min_batches: int, max_wait_s: float) -> bool:
        """Whether to mix now: ``min_batches`` parts held, or the oldest waited ``max_wait_s``."""
        with self._env.begin() as txn:
            held = txn.stat(self._held)["entries"]
            if held == 0:
                return False
            if held >= min_batches:
                return True
            first = txn.cursor(db=self._held)
            first.first()
            oldest = _unpack(first.value())[0]
            return bool(now_ms - oldest >= max_wait_s * 1000)

    def mix(self, rng: random.Random | None = None) -> str | None:
        """Move every held part into one new shuffled mix (one transaction); its id."""
        rng = rng or secrets.SystemRandom()
        with self._lock, self._env.begin(write=True) as txn:
            keys: list[bytes] = []
            reports: list[bytes] = []
            for k, v in txn.cursor(db=self._held):
                keys.append(bytes(k))
                reports.extend(_unpack(v)[1])
            if not reports:
                return None
            rng.shuffle(reports)
            bid = batch_id(reports)
            parts = split_parts(reports)
            for i, chunk in enumerate(parts):
                txn.put(f"{bid}/{i}".encode(), _pack([len(parts), list(chunk)]), db=self._out)
            for k in keys:
                txn.delete(k, db=self._held)
            self._bump(txn, b"held_reports", -len(reports))
            self._bump(txn, _META_MIXES, 1)
        return bid

    def pending(self) -> list[OutPart]:
        """Mix parts not yet acknowledged by the hub, oldest mix first."""
        out: list[OutPart] = []
        with self._env.begin() as txn:
            for k, v in txn.cursor(db=self._out):
                bid, _, part = bytes(k).decode().rpartition("/")
                parts, reports = _unpack(v)
                out.append(OutPart(bid, int(part), parts, tuple(reports)))
        return out

    def acked(self, bid: str, part: int) -> bool:
        """The hub stored this part: forget it. False if it was not pending."""
        key = f"{bid}/{part}".encode()
        with self._lock, self._env.begin(write=True) as txn:
            raw = txn.get(key, db=self._out)
            if raw is None:
                return False
            txn.delete(key, db=self._out)
            self._bump(txn, _META_FORWARDED, len(_unpack(raw)[1]))
        return True

    def prune(self, now_ms: int) -> int:
        """Forget received ids older than the retention (a shard never resends so late)."""
        cutoff = now_ms - self._retention_ms
        with self._lock, self._env.begin(write=True) as txn:
            old = [bytes(k) for k, v in txn.cursor(db=self._seen) if _U64.unpack(v)[0] < cutoff]
            for k in old:
                txn.delete(k, db=self._seen)
        return len(old)

    # -- views ---------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._env.begin() as txn:
            pending = sum(len(_unpack(v)[1]) for _, v in txn.cursor(db=self._out))
            return {
                "held_parts": txn.stat(self._held)["entries"],
                "held_reports": self._get(txn, b"held_reports"),
                "pending_parts": txn.stat(self._out)["entries"],
                "pending_reports": pending,
                "received_parts": txn.stat(self._seen)["entries"],
                "received_reports_total": self._get(txn, _META_TOTAL),
                "dropped_reports_total": self._get(txn, _META_DROPPED),
                "mixes_total": self._get(txn, _META_MIXES),
                "forwarded_reports_total": self._get(txn, _META_FORWARDED),
            }

    def _held_reports(self, txn: Any) -> int:
        return self._get(txn, b"held_reports")

    def _get(self, txn: Any, key: bytes) -> int:
        raw = txn.get(key, db=self._meta)
        return int(_U64.unpack(raw)[0]) if raw is not None else 0

    def _bump(self, txn: Any, key: bytes, delta: int) -> int:
        value = max(0, self._get(txn, key) + delta)
        txn.put(key, _U64.pack(value), db=self._meta)
        return value
