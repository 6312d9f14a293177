"""``HubService``: one hub replica's request handling and its leader's work.

Requests (``handle(frame)``, on the transport's worker threads):

- ``RegionBatch`` (from aggregators; leader only, else ``not_leader`` with the
  leader's address): a part already received is acknowledged again at once;
  otherwise its reports are opened with the hub's keys (the current one and those
  retired less than ``key_grace_s`` ago), summed (clipped per batch) and proposed
  as one ``Ingest``; the ``BatchAck`` goes back only once it is committed.
- ``UpdateRequest`` (from shards; any replica): one part of the newest release.

The leader's work (``release``, ``rotate_key``, ``add_content``) computes outside
the state machine — noise, key generation, embeddings — and proposes the result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from omega import __version__
from omega.errors import ProtocolError, StoreError
from omega.federation import hub
from omega.federation.accountant import PrivacyAccountant
from omega.federation.hub import (
    AddContent,
    Ingest,
    Publish,
    RotateKey,
    SignKeys,
    encode_command,
)
from omega.federation.keysign import HubSigner
from omega.federation.publish import (
    body_content_ids,
    content_entries,
    current_sums,
    current_windows,
    open_batch,
    read_body,
    release_body,
    same_registry,
    update_parts,
)
from omega.federation.release import ReleaseSettings, build_release
from omega.federation.report import KEY_ID_MAX, HubKey, title_key
from omega.federation.settings import HubSettings
from omega.protocol import (
    BadRequest,
    BatchAck,
    ErrorReply,
    GlobalUpdate,
    Health,
    HealthReply,
    NotLeaderError,
    RegionBatch,
    Unavailable,
    UpdateRequest,
    decode,
    embedding_to_wire,
    encode,
)
from omega.protocol.limits import CONTENT_ID_MAX_LEN, TITLE_MAX_LEN
from omega.raft import KvReader, NotLeader, wire_error

log = logging.getLogger("omega.federation.hub")

#: Titles per AddContent command (each ~1 KB: well under a Raft command's limit).
_CONTENT_CHUNK = 500
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]


class HubStore(Protocol):
    """What the service needs of ``omega.raft.ReplicatedLmdb``."""

    def submit(self, command: bytes, timeout_s: float) -> Any: ...

    def read(self) -> AbstractContextManager[KvReader]: ...

    def is_leader(self) -> bool: ...

    def leader(self) -> str | None: ...

    def status(self) -> dict[str, Any]: ...


class ContentError(BadRequest):
    """A content item is malformed; nothing of the file was added."""


class NotNext(BadRequest):
    """A retry-safe ask (``rotate_key(key_id)``, ``release(version=)``) for a key or
    release that is neither the last one made nor the next."""


class HubService:
    """One hub replica. Thread-safe."""

    def __init__(self, settings: HubSettings, release: ReleaseSettings, store: HubStore, *,
                 embed: Embed | None = None, wall: Callable[[], float] = time.time,
                 rng: np.random.Generator | None = None, name: str = "hub",
                 submit_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.release_settings = release
        self._store = store
        self._embed = embed
        self._wall = wall
        self._rng = rng or np.random.default_rng()
        self._name = name
        self._timeout = submit_timeout_s
        self._peers = settings.peer_map()
        self._started = time.monotonic()
        self._parts: dict[tuple[int, int], list[GlobalUpdate]] = {}
        self._lock = threading.Lock()  # one release / rotation / content add at a time
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self.last_release: dict[str, Any] = {}
        threads = settings.open_threads or _cpus()
        self._open_pool = (ThreadPoolExecutor(threads, thread_name_prefix="omega-hub-open")
                           if threads > 1 else None)

    def close(self) -> None:
        """Stop the opening threads (a part being opened finishes first)."""
        if self._open_pool is not None:
            self._open_pool.shutdown(wait=True)

    # -- requests ----------------------------------------------------------------------

    def handle(self, frame: bytes) -> bytes:
        """One request → its reply frame; never raises for bad input."""
        try:
            msg = decode(frame, allowed=(RegionBatch, UpdateRequest, Health))
            if isinstance(msg, RegionBatch):
                reply: Any = self._region_batch(msg)
            elif isinstance(msg, UpdateRequest):
                reply = self.update_part(msg.since_version, msg.part)
            else:
                status = "ok" if self._store.leader() else "degraded"
                reply = HealthReply("hub", self._name, status,
                                    max(0.0, time.monotonic() - self._started), __version__)
        except ProtocolError as exc:
            self._count(f"error.{exc.code}")
            return encode(ErrorReply.from_error(exc))
        except StoreError as exc:
            # Leadership moved while the part was being stored: the sender retries
            # (on the leader), and the part is stored once whatever happened here.
            self._count("error.store")
            err = self._not_leader() if isinstance(exc, NotLeader) else Unavailable(
                f"not stored: {type(exc).__name__}; retry", retry_after_s=0.5)
            return encode(ErrorReply.from_error(err))
        except Exception as exc:
            log.exception("hub request failed")
            return encode(ErrorReply.from_error(exc))
        self._count(f"ok.{type(reply).__name__}")
        return encode(reply)

    def _not_leader(self) -> NotLeaderError:
        leader = self._store.leader()
        return NotLeaderError("this hub replica is not the leader",
                              leader=self._peers.get(leader) if leader else None)

    def _region_batch(self, msg: RegionBatch) -> BatchAck:
        if not self._store.is_leader():
            raise self._not_leader()
        part_key = f"{msg.batch_id}/{msg.part}"
        now = self._wall()
        with self._store.read() as kv:
            if hub.has_batch(kv, part_key):
                self._count("batch.duplicate")
                return BatchAck(msg.batch_id, msg.part, True)
            keys = self._open_keys(kv, now)
        opened = open_batch(keys, msg.reports, self._open_pool)
        cmd = Ingest(part_key, msg.region, int(now * 1000), opened.sums, opened.window,
                     opened.reports, opened.opened, opened.dummies, opened.dropped)
        result = self._submit(cmd)
        duplicate = isinstance(result, tuple) and result[0] == "duplicate"
        self._count("batch.duplicate" if duplicate else "batch.stored")
        self._count("reports.dropped", n=opened.dropped)
        return BatchAck(msg.batch_id, msg.part, duplicate)

    def _open_keys(self, kv: KvReader, now: float) -> dict[int, HubKey]:
        grace_ms = self.settings.key_grace_s * 1000
        out = {}
        for rec in hub.keys(kv):
            if rec.retired_ms == 0 or now * 1000 - rec.retired_ms <= grace_ms:
                out[rec.key_id] = HubKey(rec.key_id, rec.public, rec.private)
        return out

    def update_part(self, since: int, part: int) -> GlobalUpdate:
        """Part ``part`` of the newest release if it is newer than ``since``; else an
        empty update naming the newest version. A shard that holds the release just
        before gets the broadcast's parts (titles changed since); any other gets the
        whole registry."""
        with self._store.read() as kv:
            newest = hub.version(kv)
        if since >= newest:  # nothing newer: no parts to cut (a lagging replica too)
            return GlobalUpdate(newest)
        parts = self.release_parts(since=since)
        if not parts or parts[0].version <= since:
            return GlobalUpdate(parts[0].version if parts else 0)
        if part >= len(parts):
            raise BadRequest(f"release {parts[0].version} has {len(parts)} parts, not {part + 1}")
        return parts[part]

    def release_parts(self, since: int | None = None) -> list[GlobalUpdate]:
        """The newest release as GlobalUpdate parts, for a holder of release ``since``
        (None: the broadcast, for holders of the one before). Titles go only as changes
        since the previous release when ``since`` is that release, else all of them
        (content base 0). Cached per version and base."""
        with self._store.read() as kv:
            # The version alone first: the body is megabytes at 10,000s of titles.
            version = hub.version(kv)
            base = version - 1 if since is None or since == version - 1 else 0
            cached = self._parts.get((version, base))
            if cached is not None:
                return cached
            rel = hub.release(kv)
            if rel is None:
                return []
            version, _, body = rel
            doc = read_body(body)
            content = {c: rec for c in body_content_ids(doc[3], base)
                       if (rec := hub.content_item(kv, c)) is not None}
            key = next((k for k in hub.keys(kv) if k.key_id == doc[4]), None)
        parts = update_parts(version, body, content,
                             (key.key_id, key.public, key.sig) if key else (0, b"", b""),
                             base=base)
        self._parts = {k: v for k, v in self._parts.items() if k[0] == version}
        self._parts[(version, base)] = parts
        return parts

    # -- the leader's work -------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._store.is_leader()

    def ensure_key(self) -> int | None:
        """On the leader: make the first key pair (and with it the hub's signer) if
        there is none; give a hub whose keys predate its signer one; the key's id."""
        if not self._store.is_leader():
            return None
        with self._store.read() as kv:
            cur = hub.current_key(kv)
            seed = hub.signer_seed(kv)
        if cur is None:
            return int(self.rotate_key()["key_id"])
        if seed is None:
            self._sign_existing()
        return cur.key_id

    def _sign_existing(self) -> None:
        """A signer for a hub whose key pairs were made before it had one; then a
        release announcing the current key, signed."""
        with self._lock:
            with self._store.read() as kv:
                if hub.signer_seed(kv) is not None:
                    return
                held = hub.keys(kv)
            signer = HubSigner.generate()
            sigs = tuple((k.key_id, signer.sign(k.key_id, k.public)) for k in held)
            result = self._commit(SignKeys(int(self._wall() * 1000), signer.seed, sigs),
                                  "signing the existing keys")
        log.info("hub signer made for existing keys",
                 extra={"fields": {"result": f"{result!r}", "verify_key": signer.verify_key.hex()}})
        self.release(announce=True)

    def rotate_key(self, key_id: int | None = None) -> dict[str, Any]:
        """A new key pair becomes current; the previous one still opens reports for
        ``key_grace_s``. It is signed by the hub's signer (made with the first key
        pair), and a release announcing it follows at once.

        With ``key_id``, the rotation is safe to ask again: key ``key_id`` must be the
        next one, or already current (then it is answered as made, and announced if
        no release has yet). An operator whose answer was lost — the leader changed,
        the call timed out — asks again with the same id and never rotates twice.
        """
        if not self._store.is_leader():
            raise self._not_leader()
        with self._lock:
            with self._store.read() as kv:
                nxt = max([*(k.key_id for k in hub.keys(kv)), hub.counters(kv)["key"]]) + 1
                seed = hub.signer_seed(kv)
                cur = hub.current_key(kv)
            signer = HubSigner(seed) if seed is not None else HubSigner.generate()
            again = cur is not None and seed is not None and key_id == cur.key_id
            if again and cur is not None:
                made, public = cur.key_id, cur.public
            elif key_id is not None and key_id != nxt:
                raise NotNext(f"key {key_id} is neither the current one "
                              f"({cur.key_id if cur else 'none'}) nor the next one ({nxt})")
            else:
                made, public = nxt, self._make_key(nxt, signer, new_signer=seed is None)
        # Asked again: released only if the announcement was lost with the old leader
        # (a release without news is not made).
        self.release(announce=not again)
        return {"key_id": made, "public_key": public.hex(),
                "verify_key": signer.verify_key.hex()}

    def _make_key(self, key_id: int, signer: HubSigner, *, new_signer: bool) -> bytes:
        """Key pair ``key_id``, signed and committed (with ``signer``'s seed when the
        hub has none yet); its public half."""
        if key_id > KEY_ID_MAX:
            raise BadRequest("key ids exhausted")
        key = HubKey.generate(key_id)
        assert key.private is not None
        result = self._commit(RotateKey(
            key_id, key.public, key.private, int(self._wall() * 1000),
            int(self.settings.key_grace_s * 1000), signer.sign(key_id, key.public),
            signer.seed if new_signer else b""), f"rotating to key {key_id}")
        if isinstance(result, tuple) and result[0] != "rotated":
            raise Unavailable(f"key {key_id} not rotated ({result[0]}); retry", retry_after_s=1.0)
        return key.public

    def add_content(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Register titles (``id``, ``title``, optional ``metadata``, optional
        ``embedding`` of 384 floats); titles without one are embedded here. All or
        nothing: a bad item refuses the whole call (``ContentError``)."""
        if not self._store.is_leader():
            raise self._not_leader()
        rows: list[tuple[str, str, str, bytes | None]] = []
        for i, item in enumerate(items):
            rows.append(_content_row(i, item))
        ids = [r[0] for r in rows]
        if len(set(ids)) != len(ids):
            raise ContentError("duplicate content ids in one add")
        missing = [i for i, r in enumerate(rows) if r[3] is None]
        embedded = 0
        if missing:
            if self._embed is None:
                raise ContentError("no embedder on this hub: give every item an embedding")
            texts = [_embed_text(rows[i][1], rows[i][2]) for i in missing]
            vectors = self._embed(texts)
            for j, i in enumerate(missing):
                cid, title, meta, _ = rows[i]
                rows[i] = (cid, title, meta, embedding_to_wire(vectors[j]))
            embedded = len(missing)
        now_ms = int(self._wall() * 1000)
        with self._lock:
            for k in range(0, len(rows), _CONTENT_CHUNK):
                chunk = tuple((c, t, m, e or b"") for c, t, m, e in rows[k:k + _CONTENT_CHUNK])
                self._commit(AddContent(now_ms, chunk), f"adding titles {k}..{k + len(chunk)}")
        self._count("content.added", n=len(rows))
        return {"added": len(rows), "embedded": embedded}

    def release(self, *, announce: bool = False, version: int | None = None
                ) -> dict[str, Any]:
        """Make the next release on the leader.

        With new reports: noise, thresholds, lists (``build_release``), privacy spent.
        Without: a release only when the key or the registry changed since the last
        one (``announce`` forces it), carrying the previous lists and no new cost.

        With ``version``, safe to ask again: the release must be the next one, or the
        last one made (then it is answered as made, ``"again": True``), so a lost
        answer asked again does not spend ε on a second release.
        """
        if not self._store.is_leader():
            raise self._not_leader()
        with self._lock:
            if version is not None:
                with self._store.read() as kv:
                    last = hub.release(kv)
                    current = hub.version(kv)
                if last is not None and version == current:
                    return {"released": True, "again": True, **_release_info(*last)}
                if version != current + 1:
                    raise NotNext(f"release {version} is neither the last one made "
                                  f"({current}) nor the next one ({current + 1})")
            return self._release(announce)

    def _release(self, announce: bool) -> dict[str, Any]:
        s = self.release_settings
        now = self._wall()
        with self._store.read() as kv:
            c = hub.counters(kv)
            pending = list(hub.deltas(kv))
            folded = hub.folded_sums(kv)
            wins = hub.windows(kv)
            acc_raw = hub.accountant(kv)
            prev = hub.release(kv)
            records = list(hub.content(kv))
            key = hub.current_key(kv)
        key_id = key.key_id if key else 0
        catalog = {title_key(rec.id): rec.id for rec in records}
        version = c["version"] + 1
        prev_body = prev[2] if prev else None
        old = read_body(prev_body) if prev_body is not None else None
        entries = content_entries(records, old[3] if old is not None else None, version)
        del records  # the embeddings: megabytes at 10,000s of titles
        summed = int(old[5].get("reports", 0)) if old is not None else 0
        if not pending:
            if (old is not None and not announce and same_registry(old[3], entries)
                    and old[4] == key_id):
                return {"released": False, "reason": "nothing new", "version": c["version"]}
            rel = None
            acc = PrivacyAccountant.from_bytes(acc_raw) if acc_raw else PrivacyAccountant()
        else:
            sums = current_sums(folded, [d[2] for d in pending])
            summed = sums.reports
            by_region: dict[str, list[bytes]] = {}
            for _, region, _, window in pending:
                by_region.setdefault(region, []).append(window)
            rel = build_release(sums, catalog, s, self._rng,
                                regions=current_windows(wins, by_region))
            acc = PrivacyAccountant.from_bytes(acc_raw) if acc_raw else PrivacyAccountant()
            if s.noise:
                acc.spend(s.sigma, s.sensitivity)
        # Kept with the release (status, and the answer to this release asked again).
        stats = {
            "reports": summed, "spent": bool(pending),
            "epsilon": _finite(rel.epsilon) if rel else 0.0,
            "epsilon_total": _finite(acc.epsilon(s.delta) if acc.releases else 0.0),
            "sigma": rel.sigma if rel else 0.0,
            "titles_published": rel.titles_published if rel else 0,
            "pairs_published": rel.pairs_published if rel else 0,
            "batches": len(pending), "titles": len(entries),
            "titles_changed": sum(1 for e in entries if e[2] == version), "key_id": key_id,
        }
        body = release_body(rel, prev_body, entries, key_id, stats)
        cmd = Publish(version, int(now * 1000), pending[-1][0] if pending else 0,
                      bool(pending), acc.to_bytes(), body,
                      int((now - self.settings.retention_s) * 1000))
        result = self._commit(cmd, f"publishing release {version}")
        if not (isinstance(result, tuple) and result[0] == "published"):
            return {"released": False, "reason": f"{result!r}", "version": c["version"]}
        info = {"released": True, **_release_info(version, int(now * 1000), body, stats)}
        self.last_release = info
        log.info("release published", extra={"fields": info})
        return info

    # -- views -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._store.read() as kv:
            c = hub.counters(kv)
            rel = hub.release(kv)
            acc_raw = hub.accountant(kv)
            # The public halves are public: an operator provisions TVs with the current one.
            held = hub.keys(kv)
            pending = sum(1 for _ in hub.deltas(kv))
            titles = sum(1 for _ in hub.content(kv))
            seed = hub.signer_seed(kv)
        keys = [{"key_id": k.key_id, "public_key": k.public.hex(), "retired_ms": k.retired_ms,
                 "signed": bool(k.sig)} for k in held]
        out: dict[str, Any] = {"role": "hub", "leader": self._store.is_leader(),
                               "counters": c, "pending_batches": pending, "titles": titles,
                               "keys": keys, "current_key": c["key"]}
        if seed is not None:
            # What TVs trust: provisioned once; every key announcement is checked with it.
            verify = HubSigner(seed).verify_key.hex()
            out["verify_key"] = verify
            cur = next((k for k in held if k.key_id == c["key"]), None)
            if cur is not None:
                out["provision"] = provision_args(cur.key_id, cur.public.hex(), verify)
        if rel is not None:
            out["last_release"] = _release_info(*rel)
        if acc_raw:
            acc = PrivacyAccountant.from_bytes(acc_raw)
            eps = acc.epsilon(self.release_settings.delta) if acc.releases else 0.0
            out["epsilon_spent"] = _finite(eps)
            out["releases_spent"] = acc.releases
        with self._counts_lock:
            out["requests"] = dict(self._counts)
        return out

    # -- internals ---------------------------------------------------------------------

    def _submit(self, cmd: hub.Command) -> Any:
        return self._store.submit(encode_command(cmd), self._timeout)

    def _commit(self, cmd: hub.Command, what: str) -> Any:
        """The leader's own command, committed; the store's failure as the typed error
        an operator can act on, saying whether it may have been applied."""
        try:
            return self._submit(cmd)
        except NotLeader:
            raise self._not_leader() from None
        except StoreError as exc:
            raise wire_error(exc, what) from None

    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n


def _release_info(version: int, made_ms: int, body: bytes,
                  stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A release as status and ``release`` show it: version, time, body bytes and its
    stats (reports summed, whether it spent ε, ε and σ, titles and pairs published,
    batches, titles in the registry and changed, key id), read from the body unless
    given (the body is megabytes at 10,000s of titles)."""
    return {"version": version, "time": made_ms / 1000, "body_bytes": len(body),
            **(stats if stats is not None else read_body(body)[5])}


def _cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def provision_args(key_id: int, public_hex: str, verify_hex: str) -> str:
    """The hub's part of ``omega-node tv provision``, ready to paste."""
    return (f"--hub-key-id {key_id} --hub-public-key {public_hex} "
            f"--hub-verify-key {verify_hex}")


def _finite(x: float) -> float | str:
    """JSON-safe: ε is infinite after a release without noise."""
    return x if math.isfinite(x) else "inf"


def _content_row(i: int, item: Mapping[str, Any]) -> tuple[str, str, str, bytes | None]:
    if not isinstance(item, Mapping):
        raise ContentError(f"item {i}: expected an object with id and title")
    cid, title = item.get("id"), item.get("title")
    if not (isinstance(cid, str) and 0 < len(cid) <= CONTENT_ID_MAX_LEN
            and set(cid) <= _ID_CHARS):
        raise ContentError(f"item {i}: id must be 1-64 of A-Z a-z 0-9 . _ : -")
    if not (isinstance(title, str) and 0 < len(title) <= TITLE_MAX_LEN):
        raise ContentError(f"item {i} ({cid}): title must be 1-256 characters")
    meta = item.get("metadata", {})
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContentError(f"item {i} ({cid}): metadata is not JSON: {exc}") from None
    emb = item.get("embedding")
    if emb is None:
        return cid, title, meta_json, None
    try:
        return cid, title, meta_json, embedding_to_wire(np.asarray(emb, dtype=np.float32))
    except (ProtocolError, TypeError, ValueError) as exc:
        raise ContentError(f"item {i} ({cid}): bad embedding: {exc}") from None


def _embed_text(title: str, meta_json: str) -> str:
    """What the hub embeds for a title: its title and, as the TV does, its genres and
    description when the metadata has them."""
    meta = json.loads(meta_json)
    parts = [title]
    if isinstance(meta, dict):
        genres = meta.get("genres")
        if isinstance(genres, list):
            parts.append(", ".join(str(g) for g in genres))
        desc = meta.get("description")
        if isinstance(desc, str) and desc:
            parts.append(desc)
    return ". ".join(p for p in parts if p)
