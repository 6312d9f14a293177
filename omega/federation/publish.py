"""From the hub's state to a release and back out as ``GlobalUpdate`` parts.

The glue between the hub's state machine (``hub``) and the federation maths
(``sums``, ``trends``, ``accountant``, ``release``): ``fold`` merges opened deltas
into the stored sums (deterministic: it runs inside ``apply``), ``open_batch``
opens one received part into a delta, ``release_body`` packs a ``Release`` for
the log, and ``update_parts`` cuts a stored release into frames within the
protocol's limits (the same parts on every replica, for every request).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import zstandard

from omega.federation.release import Release
from omega.federation.report import CoView, HubKey, ReportError, open_report
from omega.federation.sums import CoviewSums
from omega.federation.trends import RegionWindow
from omega.protocol import GlobalUpdate, NewContent
from omega.protocol.limits import MAX_ITEMS, MAX_NEIGHBOURS, TITLE_MAX_LEN

from .hub import ContentRecord, pack, unpack

#: Bytes a GlobalUpdate part may hold (its frame limit is 512 KiB).
PART_BUDGET = 384 * 1024


def fold(sums: bytes | None, new: list[bytes], wins: dict[str, bytes],
         new_wins: dict[str, list[bytes]], roll: bool) -> tuple[bytes, dict[str, bytes]]:
    """Stored sums + deltas → new stored sums; each region's window + its deltas,
    rolled (the recent period ends with the release)."""
    total = CoviewSums.from_bytes(sums) if sums else CoviewSums()
    for raw in new:
        total.merge(CoviewSums.from_bytes(raw))
    out: dict[str, bytes] = {}
    for region in sorted(set(wins) | set(new_wins)):
        w = RegionWindow.from_bytes(wins[region]) if region in wins else RegionWindow()
        for raw in new_wins.get(region, []):
            w.merge(RegionWindow.from_bytes(raw))
        if roll:
            w.roll()
        out[region] = w.to_bytes()
    return total.to_bytes(), out


def current_sums(sums: bytes | None, new: Sequence[bytes]) -> CoviewSums:
    """Everything summed so far: the folded sums and the pending deltas."""
    total = CoviewSums.from_bytes(sums) if sums else CoviewSums()
    for raw in new:
        total.merge(CoviewSums.from_bytes(raw))
    return total


def current_windows(wins: Mapping[str, bytes], new: Mapping[str, Sequence[bytes]]
                    ) -> dict[str, RegionWindow]:
    out: dict[str, RegionWindow] = {}
    for region in sorted(set(wins) | set(new)):
        w = RegionWindow.from_bytes(wins[region]) if region in wins else RegionWindow()
        for raw in new.get(region, ()):
            w.merge(RegionWindow.from_bytes(raw))
        out[region] = w
    return out


@dataclass(frozen=True)
class OpenedBatch:
    sums: bytes
    window: bytes
    reports: int
    opened: int
    dummies: int
    dropped: int


#: Reports per opening task when a pool opens a part: ~10 ms of work, so the pool's
#: per-task cost is noise and a 1,500-report part spreads over six tasks.
OPEN_CHUNK = 250


def open_batch(keys: Mapping[int, HubKey], reports: Sequence[bytes],
               pool: Executor | None = None) -> OpenedBatch:
    """Open one received part: its sums (clipped per batch) and region counts.
    A report that does not open (foreign key, damaged, malformed) is dropped and
    counted; dummies count nothing. ``pool``: open chunks of the part on its threads
    (the order of the co-views, and so the clipping, is the same as without)."""
    if pool is None or len(reports) <= OPEN_CHUNK:
        cvs, dummies, dropped = _open_all(keys, reports)
    else:
        cvs, dummies, dropped = [], 0, 0
        chunks = [reports[i:i + OPEN_CHUNK] for i in range(0, len(reports), OPEN_CHUNK)]
        for c, d, x in pool.map(functools.partial(_open_all, keys), chunks):
            cvs += c
            dummies += d
            dropped += x
    sums = CoviewSums()
    sums.add_batch(cvs)
    window = RegionWindow()
    window.add_batch(cvs)
    return OpenedBatch(sums.to_bytes(), window.to_bytes(), len(reports), len(cvs), dummies,
                       dropped)


def _open_all(keys: Mapping[int, HubKey], reports: Sequence[bytes]
              ) -> tuple[list[CoView], int, int]:
    cvs: list[CoView] = []
    dummies = dropped = 0
    for blob in reports:
        try:
            opened = open_report(keys, blob)
        except ReportError:
            dropped += 1
            continue
        if opened.coview is None:
            dummies += 1
        else:
            cvs.append(opened.coview)
    return cvs, dummies, dropped


# -- release bodies ----------------------------------------------------------------------


#: A registry entry of a release body: the content id, a digest of what TVs get of it
#: (title, embedding) and the release that first carried it as it is now.
ContentEntry = tuple[str, bytes, int]


def content_digest(rec: ContentRecord) -> bytes:
    """What TVs get of a title, hashed: a replaced title is sent again, a same one not."""
    h = hashlib.blake2b(rec.title[:TITLE_MAX_LEN].encode(), digest_size=8)
    h.update(rec.embedding)
    return h.digest()


def content_entries(records: Iterable[ContentRecord], previous: Sequence[Any] | None,
                    version: int) -> list[ContentEntry]:
    """The registry as release ``version`` carries it: each title, sorted by id, with the
    previous release's version for it when it did not change since, else ``version``.
    ``previous``: the previous body's entries (a body from before entries — plain ids —
    counts every title as changed)."""
    before = {e[0]: (bytes(e[1]), int(e[2])) for e in previous or ()
              if isinstance(e, (list, tuple)) and len(e) == 3}
    out: list[ContentEntry] = []
    for rec in sorted(records, key=lambda r: r.id):
        digest = content_digest(rec)
        old = before.get(rec.id)
        out.append((rec.id, digest, old[1] if old is not None and old[0] == digest
                    else version))
    return out


def same_registry(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two bodies' registries hold the same titles, unchanged."""
    def pairs(entries: Sequence[Any]) -> list[tuple[str, bytes]] | None:
        if any(not isinstance(e, (list, tuple)) for e in entries):
            return None  # ids only: an older body, not comparable
        return [(e[0], bytes(e[1])) for e in entries]
    pa, pb = pairs(a), pairs(b)
    return pa is not None and pa == pb


def release_body(rel: Release | None, previous: bytes | None,
                 content: Sequence[ContentEntry], key_id: int, stats: Mapping[str, Any]
                 ) -> bytes:
    """The stored body of a release: its lists (a release that spent no budget keeps
    the previous one's), the registry's entries and the current key id."""
    if rel is None and previous is not None:
        nb, pop, trends, *_ = read_body(previous)
    elif rel is not None:
        nb = [[t, [[n, float(s)] for n, s in lst[:MAX_NEIGHBOURS]]]
              for t, lst in sorted(rel.neighbours.items())]
        pop = [[t, float(max(0.0, s))] for t, s in sorted(rel.popularity.items())]
        trends = [[r, [[t, float(v)] for t, v in lst[:MAX_ITEMS]]]
                  for r, lst in sorted(rel.trends.items())]
    else:
        nb, pop, trends = [], [], []
    doc = [nb, pop, trends, [list(e) for e in content], key_id, dict(stats)]
    out: bytes = zstandard.ZstdCompressor(level=3).compress(pack(doc))
    return out


def read_body(body: bytes) -> list[Any]:
    """``[neighbours, popularity, trends, registry entries, key id, stats]``; an entry
    is ``[id, digest, version]`` (a body written before entries holds plain ids)."""
    doc = unpack(zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 30))
    assert isinstance(doc, list)
    return doc


def body_content_ids(entries: Sequence[Any], since: int = 0) -> list[str]:
    """Ids of the entries a release sends to a holder of release ``since`` (0: all)."""
    return [e if isinstance(e, str) else e[0] for e in entries
            if since == 0 or isinstance(e, str) or int(e[2]) > since]


def update_parts(version: int, body: bytes, content: Mapping[str, ContentRecord],
                 key: tuple[int, bytes, bytes], *, base: int = 0) -> list[GlobalUpdate]:
    """The release as ``GlobalUpdate`` frames: each within ``PART_BUDGET`` bytes and
    ``MAX_ITEMS`` entries per list; every part names the hub's key ``(key_id, public,
    signature)`` — the signature is what lets a TV tell it from a shard's. ``base``:
    send only the titles new or changed since that release (0: the whole registry);
    ``content`` must hold at least those."""
    nb, pop, trends, entries, _, _ = read_body(body)
    cids = body_content_ids(entries, base)
    parts: list[dict[str, list[Any]]] = []
    cur: dict[str, list[Any]] = {"n": [], "p": [], "r": [], "c": []}
    used = 0

    def add(kind: str, item: Any, size: int) -> None:
        nonlocal cur, used
        if (used + size > PART_BUDGET or len(cur[kind]) >= MAX_ITEMS) and any(cur.values()):
            parts.append(cur)
            cur, used = {"n": [], "p": [], "r": [], "c": []}, 0
        cur[kind].append(item)
        used += size

    for t, lst in nb:
        add("n", (t, tuple((n, float(s)) for n, s in lst)), 16 + sum(len(n) + 12 for n, _ in lst))
    for t, s in pop:
        add("p", (t, float(s)), len(t) + 12)
    for r, lst in trends:
        add("r", (r, tuple((t, float(v)) for t, v in lst)), 16 + sum(len(t) + 12 for t, _ in lst))
    for cid in cids:
        rec = content.get(cid)
        if rec is not None:
            title = rec.title[:TITLE_MAX_LEN]
            add("c", NewContent(cid, title, rec.embedding), 800 + len(title))
    if any(cur.values()) or not parts:
        parts.append(cur)
    n = len(parts)
    return [GlobalUpdate(version, tuple(p["n"]), tuple(p["p"]), tuple(p["r"]), tuple(p["c"]),
                         i, n, key[0], key[1], key[2], base) for i, p in enumerate(parts)]
