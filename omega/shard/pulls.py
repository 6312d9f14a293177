"""The global update as stored records, and pull responses built from them.

``records_of(update)`` turns a ``GlobalUpdate`` (or one part of it) into the
``(kind, key, value)`` records of a ``SetGlobal`` command; ``build_pull`` reads the
records changed since a device's cursor and packs a ``PullResp`` within a byte
budget. Plain functions over plain data: no sockets, no store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from omega.protocol import GlobalUpdate, NewContent, PullResp
from omega.protocol.limits import MAX_ITEMS, MAX_NEW_CONTENT_PER_PULL
from omega.shard.commands import pack, unpack
from omega.shard.state import (
    HUB_KEY_RECORD,
    KIND_CONTENT,
    KIND_HUB_KEY,
    KIND_NEIGHBOURS,
    KIND_POPULARITY,
    KIND_TRENDS,
    Change,
)

Record = tuple[bytes, bytes, bytes]

#: Per-record framing the byte budget charges on top of keys and values.
_OVERHEAD = 8


def records_of(update: GlobalUpdate) -> tuple[Record, ...]:
    """The stored records of one part of a global release."""
    out: list[Record] = []
    for title, nbrs in update.neighbours:
        out.append((KIND_NEIGHBOURS, title.encode(), pack([[n, s] for n, s in nbrs])))
    for title, score in update.popularity:
        out.append((KIND_POPULARITY, title.encode(), pack(score)))
    for region, trends in update.trends:
        out.append((KIND_TRENDS, region.encode(), pack([[t, v] for t, v in trends])))
    for item in update.new_content:
        out.append((KIND_CONTENT, item.id.encode(), pack([item.title, item.embedding])))
    if update.hub_key_id:
        # Relayed as the hub signed it: the shard cannot (and need not) check it; the TV does.
        out.append((KIND_HUB_KEY, HUB_KEY_RECORD,
                    pack([update.hub_key_id, update.hub_public_key, update.hub_key_sig])))
    return tuple(out)


@dataclass(frozen=True)
class PullPlan:
    """A pull answer: the response, and how far through the delta it got."""

    response: PullResp
    records: int
    complete: bool


def build_pull(changes: Iterable[Change], *, current: int, region: str,
               wanted: Sequence[Change], max_records: int, max_bytes: int,
               hub_key: tuple[int, bytes, bytes] = (0, b"", b"")) -> PullPlan:
    """Pack records changed since the device's cursor, oldest first, into a PullResp.

    Stops before ``max_records`` records or ``max_bytes`` of payload (at least one
    record always goes). The response's ``global_version`` is the cursor of the
    last record it covers (``current`` when it covers all), so the next pull
    continues exactly there. Other regions' trends are skipped, not sent.
    ``wanted``: content records the device asked for by id, added while room remains.
    ``hub_key``: the hub's current ``(key_id, public_key, signature)``, sent in every
    response (~100 bytes) so a TV always seals to the current key — once the hub's
    signature over it verifies on the TV (``omega.federation.keysign``).
    """
    neighbours: list[tuple[str, tuple[tuple[str, float], ...]]] = []
    popularity: list[tuple[str, float]] = []
    trends: tuple[tuple[str, float], ...] = ()
    content: dict[str, NewContent] = {}
    used = count = 0
    version = current
    complete = True
    for ch in changes:
        size = len(ch.key) + len(ch.value) + _OVERHEAD
        if count and (count >= max_records or used + size > max_bytes or
                      len(neighbours) >= MAX_ITEMS or len(popularity) >= MAX_ITEMS or
                      (ch.kind == KIND_CONTENT and len(content) >= MAX_NEW_CONTENT_PER_PULL)):
            complete = False
            break
        version = ch.cursor
        key = ch.key.decode()
        if ch.kind == KIND_NEIGHBOURS:
            rows = unpack(ch.value) if ch.value else []
            neighbours.append((key, tuple((n, float(s)) for n, s in rows)))
        elif ch.kind == KIND_POPULARITY:
            popularity.append((key, float(unpack(ch.value)) if ch.value else 0.0))
        elif ch.kind == KIND_TRENDS:
            if key != region:
                continue  # another region's: the cursor moves past it, nothing sent
            rows = unpack(ch.value) if ch.value else []
            trends = tuple((t, float(v)) for t, v in rows)
        elif ch.kind == KIND_HUB_KEY:
            continue  # sent in every response, below
        elif ch.kind == KIND_CONTENT:
            if not ch.value:
                continue
            title, emb = unpack(ch.value)
            content[key] = NewContent(key, title, emb)
        used += size
        count += 1
    if complete:
        version = current
    for ch in wanted:
        key = ch.key.decode()
        if len(content) >= MAX_NEW_CONTENT_PER_PULL or used + len(ch.value) > max_bytes:
            break
        if key not in content and ch.value:
            title, emb = unpack(ch.value)
            content[key] = NewContent(key, title, emb)
            used += len(ch.value) + _OVERHEAD
    resp = PullResp(version, tuple(neighbours), tuple(popularity), trends,
                    tuple(content.values()), hub_key[0], hub_key[1], hub_key[2])
    return PullPlan(resp, count, complete)
