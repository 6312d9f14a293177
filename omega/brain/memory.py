"""The brain's durable memory: one LMDB environment, named databases.

The only brain module that imports ``lmdb``. Every public write is one write
transaction, committed (and, with ``durability="sync"``, fsynced) before the
method returns: what a method returned for survives ``kill -9`` and, with
``sync``, a power cut. LMDB errors are translated to ``omega.brain.errors``.

Databases (keys → values; u64 = 8-byte big-endian, mp = msgpack):

======================  ==========================================================
``meta``                schema marker, id counters, last event time, embedder probe
``catalog``             content id → mp {idx, title, genres, ...}
``items``               u64 catalog position → content id
``embeddings``          u64 catalog position → float32[dim] bytes
``episodes``            u64 sequence → mp [content id, watch fraction, time, context]
                        (never leaves the TV)
``seen``                content id → mp [views, successes, last time, last fraction]
``profile``             b"vector" → float32[dim]; b"stats" → mp {views, successes}
``patterns``            u64 pattern id → mp [content id, successes, samples, last time,
                        key float32[dim]] (the skill library)
``consolidated``        u64 cluster id → mp {centroid, size, contents} (reasoning bank)
``counts``              "daypart\\x1fgenre" → mp [weighted successes, views]
                        (action → outcome counts)
``crowd``               b"n\\0"+id → mp [[id, score]...]; b"p\\0"+id → mp score;
                        b"trends" → mp [[id, score]...]; b"version" → mp int
``sync``                sync state (free keys) for the SyncAgent
``outbound``            u64 → bytes, the outbound queue (sealed reports)
======================  ==========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import numpy as np
import numpy.typing as npt

from omega.brain.errors import (
    BrainError,
    CorruptDataDir,
    DataDirError,
    SchemaVersionMismatch,
    StorageError,
    StorageFull,
)

__all__ = [
    "DB_NAMES",
    "SCHEMA",
    "CatalogRecord",
    "CrowdWrite",
    "Episode",
    "Memory",
    "PatternRecord",
    "ViewWrite",
]

log = logging.getLogger("omega.brain")

SCHEMA = "omega-brain/1"
DB_NAMES: tuple[str, ...] = (
    "meta", "catalog", "items", "embeddings", "episodes", "seen", "profile", "patterns",
    "consolidated", "counts", "crowd", "sync", "outbound",
)
F32 = npt.NDArray[np.float32]
_NO_KEY = np.zeros(0, dtype=np.float32)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def from_u64(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _vec(data: bytes) -> F32:
    return np.frombuffer(data, dtype=np.float32).copy()


@dataclass(frozen=True)
class CatalogRecord:
    """A catalog item as stored: the fields of ``Content`` plus its position."""

    idx: int
    content_id: str
    title: str
    genres: tuple[str, ...]
    description: str
    year: int | None
    duration_min: float | None
    metadata: Mapping[str, Any]
    text_hash: str

    def pack(self) -> bytes:
        return _pack({"i": self.idx, "t": self.title, "g": list(self.genres),
                      "d": self.description, "y": self.year, "m": self.duration_min,
                      "x": dict(self.metadata), "h": self.text_hash})

    @classmethod
    def unpack(cls, content_id: str, data: bytes) -> CatalogRecord:
        r = _unpack(data)
        return cls(idx=int(r["i"]), content_id=content_id, title=r["t"], genres=tuple(r["g"]),
                   description=r["d"], year=r["y"], duration_min=r["m"], metadata=r["x"],
                   text_hash=r["h"])


@dataclass(frozen=True)
class Episode:
    """One stored view."""

    seq: int
    content_id: str
    watch_fraction: float
    timestamp: float
    context: Mapping[str, str] | None


@dataclass(frozen=True)
class PatternRecord:
    """A skill-library entry: when the taste looked like ``key``, ``content_id`` was watched."""

    pid: int
    content_id: str
    successes: float
    samples: int
    last_ts: float
    key: F32

    def pack(self) -> bytes:
        return _pack([self.content_id, self.successes, self.samples, self.last_ts,
                      self.key.astype(np.float32).tobytes()])

    @classmethod
    def unpack(cls, pid: int, data: bytes) -> PatternRecord:
        cid, succ, samples, last_ts, key = _unpack(data)
        return cls(pid, cid, float(succ), int(samples), float(last_ts), _vec(key))


@dataclass(frozen=True)
class ViewWrite:
    """Everything one ``observe`` changes, written in one transaction."""

    episode: Episode
    #: [views, successes, last time, last fraction] for the title.
    seen: tuple[int, float, float, float]
    profile: F32
    profile_stats: Mapping[str, float]
    #: Patterns to put (created or updated) and to delete (evicted).
    patterns_put: Sequence[PatternRecord]
    patterns_delete: Sequence[int]
    next_pattern: int
    #: (daypart, genre) → new [weighted successes, views].
    counts: Mapping[tuple[str, str], tuple[float, float]]


@dataclass(frozen=True)
class CrowdWrite:
    """One crowd update, merged in one transaction."""

    version: int
    #: Title → its neighbour list (an empty list deletes the title's list).
    neighbours: Mapping[str, Sequence[tuple[str, float]]]
    popularity: Mapping[str, float]
    trends: Sequence[tuple[str, float]]


@dataclass
class CrowdState:
    """The crowd's knowledge as stored."""

    version: int = 0
    neighbours: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    trends: list[tuple[str, float]] = field(default_factory=list)


@contextmanager
def _translated(path: str, *, reading: bool = True) -> Iterator[None]:
    """LMDB's exceptions → ours; on reads, a record that does not decode is damage too."""
    try:
        yield
    except lmdb.MapFullError as exc:
        raise StorageFull(f"{path}: LMDB map is full ({exc}); raise brain.map_size") from exc
    except (lmdb.CorruptedError, lmdb.InvalidError, lmdb.PageNotFoundError,
            lmdb.VersionMismatchError, lmdb.BadChecksumError) as exc:
        raise CorruptDataDir(path, f"LMDB data is damaged: {exc}") from exc
    except lmdb.Error as exc:
        raise StorageError(f"{path}: LMDB error: {exc}") from exc
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        # msgpack's decode errors are ValueErrors; our own BadInput never reaches here.
        if not reading or isinstance(exc, BrainError):
            raise
        raise CorruptDataDir(path, f"a stored record does not decode: {exc!r}") from exc


class Memory:
    """The LMDB environment of one brain. Not thread-safe: the Brain serializes calls."""

    def __init__(self, env: Any, dbs: dict[str, Any], path: Path,
                 options: dict[str, Any] | None = None) -> None:
        self._env = env
        self._db = dbs
        self.path = path
        self._options = options or {}

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, map_size: int, durability: str = "sync") -> Memory:
        """Open (or create) the environment and check its schema marker.

        Raises ``CorruptDataDir`` (not an LMDB file, damaged pages, no marker on a
        used environment), ``SchemaVersionMismatch`` and ``DataDirError``.
        """
        where = str(path)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(where, f"cannot create the data directory: {exc}") from exc
        options: dict[str, Any] = {
            # Viewing history: the files are the TV user's alone, whatever the umask.
            "mode": 0o600,
            "map_size": map_size, "max_dbs": len(DB_NAMES) + 2, "subdir": True,
            "sync": durability != "nosync", "metasync": durability == "sync",
            "readahead": False, "meminit": False, "max_readers": 32, "lock": True}
        try:
            env = lmdb.open(where, **options)
        except lmdb.InvalidError as exc:
            raise CorruptDataDir(where, f"data.mdb is not an LMDB file: {exc}") from exc
        except lmdb.Error as exc:
            raise DataDirError(where, f"cannot open LMDB: {exc}") from exc
        try:
            with _translated(where):
                dbs = cls._open_dbs(env, where)
        except BaseException:
            env.close()
            raise
        return cls(env, dbs, path, options)

    def remap(self) -> None:
        """Close and reopen the environment: drops the pages a bulk read mapped.

        Reading a whole catalog maps (and, with the kernel's fault-around,
        counts in RSS) most of the file: ~80 MB at 10,000 titles and patterns.
        The pages stay in the OS page cache; only this process's RSS shrinks.
        """
        where = str(self.path)
        self._env.close()
        with _translated(where):
            self._env = lmdb.open(where, **self._options)
            self._db = self._open_dbs(self._env, where)

    @staticmethod
    def _open_dbs(env: Any, where: str) -> dict[str, Any]:
        with env.begin(write=True) as txn:
            # The main (unnamed) DB lists the named ones; anything else there is not ours.
            existing = {bytes(k) for k, _ in txn.cursor()}
            unknown = existing - {n.encode() for n in DB_NAMES}
            if unknown:
                raise CorruptDataDir(where, f"unknown LMDB databases {sorted(unknown)!r}: "
                                            "not a brain data directory")
            dbs = {name: env.open_db(name.encode(), txn=txn, create=True) for name in DB_NAMES}
            marker = txn.get(b"schema", db=dbs["meta"])
            if marker is None:
                if existing:
                    raise CorruptDataDir(where, "the schema marker is missing")
                txn.put(b"schema", SCHEMA.encode(), db=dbs["meta"])
            elif bytes(marker).decode("utf-8", "replace") != SCHEMA:
                raise SchemaVersionMismatch(where, bytes(marker).decode("utf-8", "replace"),
                                            SCHEMA)
        return dbs

    def close(self) -> None:
        self._env.close()

    # -- meta --------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """Counters and markers: schema, next_idx, next_episode, next_pattern, last_ts, ..."""
        with _translated(str(self.path)), self._env.begin() as txn:
            out: dict[str, Any] = {}
            for k, v in txn.cursor(db=self._db["meta"]):
                key = bytes(k).decode()
                out[key] = bytes(v).decode() if key == "schema" else _unpack(bytes(v))
            return out

    def put_meta(self, values: Mapping[str, Any]) -> None:
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            for key, value in values.items():
                txn.put(key.encode(), _pack(value), db=self._db["meta"])

    # -- catalog -----------------------------------------------------------------------

    def load_catalog(self) -> Iterator[tuple[CatalogRecord, F32]]:
        """Every catalog item with its embedding, in catalog-position order."""
        where = str(self.path)
        with _translated(where), self._env.begin() as txn:
            cat, emb = self._db["catalog"], self._db["embeddings"]
            for k, cid_b in txn.cursor(db=self._db["items"]):
                cid = bytes(cid_b).decode()
                raw = txn.get(cid_b, db=cat)
                vec = txn.get(k, db=emb)
                if raw is None or vec is None:
                    raise CorruptDataDir(where, f"catalog item {cid!r} is half-stored")
                yield CatalogRecord.unpack(cid, bytes(raw)), _vec(bytes(vec))

    def load_catalog_arrays(self, dim: int) -> tuple[list[CatalogRecord], F32]:
        """The catalog records and one ``(n, dim)`` matrix of their embeddings.

        Rows are copied straight into the matrix (no per-title arrays: at 10,000
        titles that halves the memory an open needs at its peak).
        """
        where = str(self.path)
        records: list[CatalogRecord] = []
        with _translated(where), self._env.begin() as txn:
            n = int(txn.stat(self._db["items"])["entries"])
            matrix = np.empty((n, dim), dtype=np.float32)
            cat, emb = self._db["catalog"], self._db["embeddings"]
            for i, (_, cid_b) in enumerate(txn.cursor(db=self._db["items"])):
                cid = bytes(cid_b).decode()
                raw = txn.get(cid_b, db=cat)
                vec = txn.get(u64(i), db=emb)
                if raw is None or vec is None or len(vec) != 4 * dim:
                    raise CorruptDataDir(where, f"catalog item {cid!r} is half-stored "
                                                f"or not {dim}-dimensional")
                rec = CatalogRecord.unpack(cid, bytes(raw))
                if rec.idx != i:
                    raise CorruptDataDir(where, f"catalog positions have a gap at {i}")
                matrix[i] = np.frombuffer(vec, dtype=np.float32)
                records.append(rec)
        return records, matrix

    def write_catalog(
        self, items: Sequence[tuple[CatalogRecord, F32]], meta: Mapping[str, Any]
    ) -> None:
        """Put catalog items (new or updated) and their embeddings in one transaction."""
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            for rec, vec in items:
                key = rec.content_id.encode()
                txn.put(key, rec.pack(), db=self._db["catalog"])
                txn.put(u64(rec.idx), key, db=self._db["items"])
                txn.put(u64(rec.idx), vec.astype(np.float32).tobytes(), db=self._db["embeddings"])
            for name, value in meta.items():
                txn.put(name.encode(), _pack(value), db=self._db["meta"])

    # -- views -------------------------------------------------------------------------

    def write_view(self, w: ViewWrite) -> None:
        """Store one view and everything it changes, in one transaction."""
        ep = w.episode
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            txn.put(u64(ep.seq), _pack([ep.content_id, ep.watch_fraction, ep.timestamp,
                                        dict(ep.context) if ep.context else None]),
                    db=self._db["episodes"], append=True)
            txn.put(ep.content_id.encode(), _pack(list(w.seen)), db=self._db["seen"])
            txn.put(b"vector", w.profile.astype(np.float32).tobytes(), db=self._db["profile"])
            txn.put(b"stats", _pack(dict(w.profile_stats)), db=self._db["profile"])
            for pid in w.patterns_delete:
                txn.delete(u64(pid), db=self._db["patterns"])
            for rec in w.patterns_put:
                txn.put(u64(rec.pid), rec.pack(), db=self._db["patterns"])
            for (part, genre), value in w.counts.items():
                txn.put(f"{part}\x1f{genre}".encode(), _pack(list(value)), db=self._db["counts"])
            meta = self._db["meta"]
            txn.put(b"next_episode", _pack(ep.seq + 1), db=meta)
            txn.put(b"next_pattern", _pack(w.next_pattern), db=meta)
            txn.put(b"last_ts", _pack(ep.timestamp), db=meta)

    def recent_episodes(self, n: int) -> list[Episode]:
        """The last ``n`` views, most recent first."""
        out: list[Episode] = []
        with _translated(str(self.path)), self._env.begin() as txn:
            cur = txn.cursor(db=self._db["episodes"])
            if not cur.last():
                return out
            for k, v in cur.iterprev():
                if len(out) >= n:
                    break
                out.append(self._episode(bytes(k), bytes(v)))
        return out

    def iter_episodes(self) -> Iterator[Episode]:
        """Every stored view, oldest first."""
        with _translated(str(self.path)), self._env.begin() as txn:
            for k, v in txn.cursor(db=self._db["episodes"]):
                yield self._episode(bytes(k), bytes(v))

    @staticmethod
    def _episode(k: bytes, v: bytes) -> Episode:
        cid, wf, ts, ctx = _unpack(v)
        return Episode(from_u64(k), cid, float(wf), float(ts), ctx)

    def episode_count(self) -> int:
        with _translated(str(self.path)), self._env.begin() as txn:
            return int(txn.stat(self._db["episodes"])["entries"])

    def load_seen(self) -> dict[str, tuple[int, float, float, float]]:
        with _translated(str(self.path)), self._env.begin() as txn:
            return {bytes(k).decode(): tuple(_unpack(bytes(v)))  # type: ignore[misc]
                    for k, v in txn.cursor(db=self._db["seen"])}

    def load_profile(self) -> tuple[F32 | None, dict[str, float]]:
        with _translated(str(self.path)), self._env.begin() as txn:
            vec = txn.get(b"vector", db=self._db["profile"])
            stats = txn.get(b"stats", db=self._db["profile"])
            return (_vec(bytes(vec)) if vec is not None else None,
                    _unpack(bytes(stats)) if stats is not None else {})

    def load_counts(self) -> dict[tuple[str, str], tuple[float, float]]:
        out: dict[tuple[str, str], tuple[float, float]] = {}
        with _translated(str(self.path)), self._env.begin() as txn:
            for k, v in txn.cursor(db=self._db["counts"]):
                part, _, genre = bytes(k).decode().partition("\x1f")
                succ, views = _unpack(bytes(v))
                out[(part, genre)] = (float(succ), float(views))
        return out

    # -- patterns ----------------------------------------------------------------------

    def load_patterns(self, *, keys: bool = True) -> Iterator[PatternRecord]:
        """Every pattern; with ``keys=False`` their keys are left empty (stats only)."""
        with _translated(str(self.path)), self._env.begin() as txn:
            for k, v in txn.cursor(db=self._db["patterns"]):
                rec = PatternRecord.unpack(from_u64(bytes(k)), bytes(v))
                yield rec if keys else PatternRecord(rec.pid, rec.content_id, rec.successes,
                                                     rec.samples, rec.last_ts, _NO_KEY)

    def pattern_count(self) -> int:
        with _translated(str(self.path)), self._env.begin() as txn:
            return int(txn.stat(self._db["patterns"])["entries"])

    def write_patterns(self, records: Sequence[PatternRecord], next_pattern: int,
                       delete: Sequence[int] = ()) -> None:
        """Bulk-load patterns (imports, benchmarks) and drop evicted ones, in one transaction."""
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            for pid in delete:
                txn.delete(u64(pid), db=self._db["patterns"])
            for rec in records:
                txn.put(u64(rec.pid), rec.pack(), db=self._db["patterns"])
            txn.put(b"next_pattern", _pack(next_pattern), db=self._db["meta"])

    def reset_profile(self, profile: F32) -> None:
        """After a model change: the recomputed profile, and no patterns (their keys
        lived in the old embedding space), in one transaction."""
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            txn.put(b"vector", profile.astype(np.float32).tobytes(), db=self._db["profile"])
            txn.drop(self._db["patterns"], delete=False)
            txn.drop(self._db["consolidated"], delete=False)

    def replace_consolidated(self, clusters: Sequence[Mapping[str, Any]]) -> None:
        """Replace the reasoning bank with freshly consolidated clusters."""
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            db = self._db["consolidated"]
            txn.drop(db, delete=False)
            for i, cluster in enumerate(clusters):
                txn.put(u64(i), _pack(dict(cluster)), db=db)

    def load_consolidated(self) -> list[dict[str, Any]]:
        with _translated(str(self.path)), self._env.begin() as txn:
            return [_unpack(bytes(v)) for _, v in txn.cursor(db=self._db["consolidated"])]

    # -- crowd -------------------------------------------------------------------------

    def write_crowd(self, w: CrowdWrite) -> None:
        """Merge a crowd update: replace the named lists and scores, the trends, the version."""
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            db = self._db["crowd"]
            for cid, nbrs in w.neighbours.items():
                key = b"n\0" + cid.encode()
                if nbrs:
                    txn.put(key, _pack([[n, float(s)] for n, s in nbrs]), db=db)
                else:
                    txn.delete(key, db=db)
            for cid, pop in w.popularity.items():
                txn.put(b"p\0" + cid.encode(), _pack(float(pop)), db=db)
            txn.put(b"trends", _pack([[c, float(s)] for c, s in w.trends]), db=db)
            txn.put(b"version", _pack(w.version), db=db)

    def load_crowd(self) -> CrowdState:
        state = CrowdState()
        with _translated(str(self.path)), self._env.begin() as txn:
            for k, v in txn.cursor(db=self._db["crowd"]):
                key, value = bytes(k), _unpack(bytes(v))
                if key.startswith(b"n\0"):
                    state.neighbours[key[2:].decode()] = [(str(n), float(s)) for n, s in value]
                elif key.startswith(b"p\0"):
                    state.popularity[key[2:].decode()] = float(value)
                elif key == b"trends":
                    state.trends = [(str(c), float(s)) for c, s in value]
                elif key == b"version":
                    state.version = int(value)
        return state

    # -- sync state and outbound queue (for the SyncAgent) -----------------------------

    def get_sync(self, key: str) -> bytes | None:
        with _translated(str(self.path)), self._env.begin() as txn:
            v = txn.get(key.encode(), db=self._db["sync"])
            return bytes(v) if v is not None else None

    def put_sync(self, key: str, value: bytes) -> None:
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            txn.put(key.encode(), value, db=self._db["sync"])

    def enqueue(self, payload: bytes) -> int:
        """Append to the outbound queue; returns the entry's sequence number."""
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._db["outbound"])
            seq = from_u64(bytes(cur.key())) + 1 if cur.last() else 1
            txn.put(u64(seq), payload, db=self._db["outbound"], append=True)
            return seq

    def peek(self, n: int) -> list[tuple[int, bytes]]:
        """The oldest ``n`` queued entries."""
        out: list[tuple[int, bytes]] = []
        with _translated(str(self.path)), self._env.begin() as txn:
            for k, v in txn.cursor(db=self._db["outbound"]):
                if len(out) >= n:
                    break
                out.append((from_u64(bytes(k)), bytes(v)))
        return out

    def ack(self, up_to: int) -> int:
        """Drop queued entries with sequence ≤ ``up_to``; returns how many."""
        dropped = 0
        with _translated(str(self.path), reading=False), self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._db["outbound"])
            while cur.first() and from_u64(bytes(cur.key())) <= up_to:
                cur.delete()
                dropped += 1
        return dropped

    # -- status ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Entries per database and the map's use."""
        with _translated(str(self.path)), self._env.begin() as txn:
            entries = {name: int(txn.stat(db)["entries"]) for name, db in self._db.items()}
        info = self._env.info()
        page = self._env.stat()["psize"]
        return {"entries": entries, "map_size": int(info["map_size"]),
                "used_bytes": int((info["last_pgno"] + 1) * page)}
