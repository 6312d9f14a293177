"""Every message Omega puts on a wire, as frozen dataclasses.

Each message has a one-byte ``TAG``, a frame limit ``MAX_BYTES`` and a check per
field (see ``checks``). On the wire a message is ``[TAG, PROTOCOL_VERSION, field...]``
in declaration order (docs/protocol.md). Lists are tuples; "maps" are tuples of
``(key, value)`` rows with unique keys, so every message is immutable and msgpack
maps appear only in the JSON-like payloads of ``CtlReply`` and ``TvOk``.

Identifiers (content, title, batch, shard ids) are 1-64 characters of ASCII letters,
digits and ``. _ : -``; device ids are the same, at most 31 characters; labels
(region, role, status, software version) at most 32.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from omega.errors import ProtocolError
from omega.protocol import limits as L
from omega.protocol.checks import (
    Check,
    Invalid,
    address,
    blob,
    blob_list,
    boolean,
    each,
    embedding,
    ident,
    ids,
    integer,
    json_value,
    keyed_lists,
    list_of,
    number,
    numbers,
    one_of,
    optional,
    printable,
    rows,
    text,
    texts,
)
from omega.protocol.codec import Message, Record, message, nested, record, wire
from omega.protocol.errors import (
    ERROR_CODES,
    NotLeaderError,
    RateLimited,
    Unavailable,
    error_class,
)

__all__ = [
    "BatchAck",
    "CatalogEntry",
    "CtlReply",
    "CtlRequest",
    "ErrorReply",
    "GlobalUpdate",
    "Health",
    "HealthReply",
    "Heartbeat",
    "HeartbeatAck",
    "JsonValue",
    "Neighbours",
    "NewContent",
    "Pull",
    "PullResp",
    "Push",
    "PushAck",
    "RegionBatch",
    "RegionTrends",
    "ScoredIds",
    "ShardBatch",
    "TvImportCatalog",
    "TvObserve",
    "TvOk",
    "TvRecommend",
    "TvRecommendReply",
    "TvStatus",
    "UpdateRequest",
]

#: ``((id, score), ...)``: a neighbour list, popularity, or one region's trends.
ScoredIds: TypeAlias = tuple[tuple[str, float], ...]
#: ``((title, ((neighbour, score), ...)), ...)``: per-title neighbour lists.
Neighbours: TypeAlias = tuple[tuple[str, ScoredIds], ...]
#: ``((region, ((title, velocity), ...)), ...)``.
RegionTrends: TypeAlias = tuple[tuple[str, ScoredIds], ...]
#: ``(content_id, score, reason)``.
RecommendationItem: TypeAlias = tuple[str, float, str]
#: None, bool, int, float, str, tuples and str-keyed dicts of these.
JsonValue: TypeAlias = (
    bool | int | float | str | tuple["JsonValue", ...] | dict[str, "JsonValue"] | None
)

# --- shared checks ---------------------------------------------------------------

_CONTENT_ID = ident(L.CONTENT_ID_MAX_LEN)
_DEVICE_ID = ident(L.DEVICE_ID_MAX_LEN)
_LABEL = ident(L.LABEL_MAX_LEN)
_U63 = integer()
_TS_MS = integer()
_SECONDS = number(0.0, L.FLOAT_BOUND)
_RETRY_AFTER = number(0.0, 86400.0 * 365)
_PART = integer(0, L.MAX_PARTS - 1)
_PARTS = integer(1, L.MAX_PARTS)
_JSON = json_value()
_IDS = ids(L.CONTENT_ID_MAX_LEN)
_KEY_ID = integer(0, L.HUB_KEY_ID_MAX)
_PUBLIC_KEY = blob(L.HUB_PUBLIC_KEY_BYTES)
_KEY_SIG = blob(L.HUB_KEY_SIG_BYTES)


def _scored(max_items: int, lo: float = -L.FLOAT_BOUND) -> Check:
    return rows(_IDS, numbers(lo, L.FLOAT_BOUND), max_items=max_items)


def _neighbours(max_titles: int) -> Check:
    return keyed_lists(
        _IDS,
        numbers(-L.FLOAT_BOUND, L.FLOAT_BOUND),
        max_keys=max_titles,
        max_per_key=L.MAX_NEIGHBOURS,
    )


def _region_trends() -> Check:
    return keyed_lists(
        ids(L.LABEL_MAX_LEN),
        numbers(-L.FLOAT_BOUND, L.FLOAT_BOUND),
        max_keys=L.MAX_ITEMS,
        max_per_key=L.MAX_ITEMS,
    )


def _unique_ids(inner: Check) -> Check:
    def check(value: Any) -> Any:
        result = inner(value)
        keys = [item.id for item in result]
        if len(set(keys)) != len(keys):
            raise Invalid("duplicate ids")
        return result

    return check


def _check_parts(part: int, parts: int) -> None:
    if part >= parts:
        raise Invalid(f"part {part} must be below parts {parts}")


# --- records ---------------------------------------------------------------------


@record
class NewContent(Record):
    """A title the TVs have not seen yet, with its embedding."""

    #: Content id.
    id: str = wire(_CONTENT_ID)
    #: Display title, 1-256 characters.
    title: str = wire(text(L.TITLE_MAX_LEN, 1))
    #: 384 little-endian float16 values (768 bytes), all finite; see ``vectors``.
    embedding: bytes = wire(embedding())


@record
class CatalogEntry(Record):
    """One catalog item imported into a TV brain."""

    #: Content id.
    id: str = wire(_CONTENT_ID)
    #: Display title, 1-256 characters.
    title: str = wire(text(L.TITLE_MAX_LEN, 1))
    #: Up to 16 genre names, 1-64 characters each (free text, e.g. "Children's").
    genres: tuple[str, ...] = wire(list_of(texts(L.GENRE_MAX_LEN, 1), L.MAX_GENRES))
    #: Up to 4096 characters.
    description: str = wire(text(L.DESCRIPTION_MAX_LEN))
    #: Release year, 0 if unknown.
    year: int = wire(integer(0, 9999))
    #: Running time in minutes, 0 if unknown.
    duration_min: int = wire(integer(0, 100_000))


_NEW_CONTENT_PULL = _unique_ids(each(nested(NewContent), L.MAX_NEW_CONTENT_PER_PULL))
_NEW_CONTENT_ALL = _unique_ids(each(nested(NewContent), L.MAX_ITEMS))

# --- health ----------------------------------------------------------------------


@message(tag=1, max_bytes=L.SMALL_MAX_BYTES)
class Health(Message):
    """Are you alive? (any role; answered with ``HealthReply``)."""


@message(tag=2, max_bytes=L.HEALTH_REPLY_MAX_BYTES)
class HealthReply(Message):
    """A node's liveness and identity."""

    #: Role label: ``tv``, ``shard``, ``aggregator``, ``hub`` (any label is accepted).
    role: str = wire(_LABEL)
    #: Node name (identifier).
    name: str = wire(_CONTENT_ID)
    #: Status label, e.g. ``ok``, ``starting``, ``degraded``.
    status: str = wire(_LABEL)
    #: Seconds since the node started (finite, >= 0).
    uptime_s: float = wire(_SECONDS)
    #: Software version label, e.g. ``0.1.0``.
    version: str = wire(_LABEL)


@message(tag=3, max_bytes=L.ERROR_REPLY_MAX_BYTES)
class ErrorReply(Message):
    """A refused request. Tag 3 and these four fields never change between protocol
    versions, and decode accepts an ErrorReply of any version."""

    #: One of ``ERROR_CODES``.
    code: str = wire(one_of(ERROR_CODES))
    #: Human-readable reason, at most 256 characters.
    message: str = wire(text(L.MESSAGE_MAX_LEN))
    #: With ``not_leader``: the leader's address, if known.
    leader: str | None = wire(optional(address(L.ADDRESS_MAX_LEN)), default=None)
    #: With ``rate_limited``/``unavailable``: seconds to wait before retrying.
    retry_after_s: float | None = wire(optional(_RETRY_AFTER), default=None)

    @classmethod
    def from_error(cls, exc: BaseException) -> ErrorReply:
        """The reply for an exception: its code for a ``ProtocolError``, else an
        opaque ``unavailable`` (internal details stay in the server's log)."""
        if not isinstance(exc, ProtocolError):
            return cls("unavailable", "internal error")
        code, msg = exc.code, exc.message
        if code not in ERROR_CODES:
            code, msg = "bad_request", f"{code}: {msg}"
        leader = getattr(exc, "leader", None)
        retry = getattr(exc, "retry_after_s", None)
        return cls(
            code,
            msg[: L.MESSAGE_MAX_LEN],
            leader if isinstance(leader, str) and leader else None,
            float(retry) if isinstance(retry, int | float) and 0 <= retry <= 86400 else None,
        )

    def to_error(self) -> ProtocolError:
        """The exception this reply stands for (same class as ``error_class(code)``)."""
        cls = error_class(self.code)
        if cls is NotLeaderError:
            return NotLeaderError(self.message, leader=self.leader)
        if cls is RateLimited:
            return RateLimited(self.message, retry_after_s=self.retry_after_s)
        if cls is Unavailable:
            return Unavailable(self.message, retry_after_s=self.retry_after_s)
        return cls(self.message)


# --- device <-> shard --------------------------------------------------------------


@message(tag=10, max_bytes=L.PUSH_MAX_BYTES)
class Push(Message):
    """Sealed co-view reports from one TV (signed)."""

    #: The TV's id (1-31 identifier characters).
    device_id: str = wire(_DEVICE_ID)
    #: Per-device sequence number; a retry reuses it (see ``classify_sequence``).
    seq: int = wire(_U63)
    #: Device wall time, milliseconds since the Unix epoch.
    ts_ms: int = wire(_TS_MS)
    #: Up to 8 opaque sealed reports, 1-1000 bytes each (whole frame <= 1 KB).
    reports: tuple[bytes, ...] = wire(blob_list(L.MAX_REPORTS, 1000, 1))
    #: HMAC-SHA256 (32 bytes) set by ``sign``; empty when unsigned.
    sig: bytes = wire(blob(L.MAC_BYTES), default=b"")


@message(tag=11, max_bytes=L.SMALL_MAX_BYTES)
class PushAck(Message):
    """A push is durably accepted (also the answer to a retry of the last push)."""

    #: The acknowledged sequence number.
    seq: int = wire(_U63)
    #: The newest global version the shard knows.
    global_version: int = wire(_U63)
    #: Seconds before the next push is welcome (0: any time).
    retry_after_s: float = wire(_RETRY_AFTER, default=0.0)


@message(tag=12, max_bytes=L.PULL_MAX_BYTES)
class Pull(Message):
    """Ask for what changed since a global version (signed)."""

    #: The TV's id.
    device_id: str = wire(_DEVICE_ID)
    #: Per-device sequence number.
    seq: int = wire(_U63)
    #: Device wall time, milliseconds since the Unix epoch.
    ts_ms: int = wire(_TS_MS)
    #: The last global version the TV merged (0: never).
    since_version: int = wire(_U63)
    #: Region label (scopes trends).
    region: str = wire(_LABEL)
    #: Up to 16 content ids whose embeddings the TV lacks.
    want: tuple[str, ...] = wire(list_of(_IDS, L.MAX_WANT, unique=True), default=())
    #: HMAC-SHA256 (32 bytes) set by ``sign``; empty when unsigned.
    sig: bytes = wire(blob(L.MAC_BYTES), default=b"")


@message(tag=13, max_bytes=L.PULL_RESP_MAX_BYTES)
class PullResp(Message):
    """The delta since ``Pull.since_version`` (about 5 KB typical, 64 KB at most)."""

    #: The global version this delta brings the TV to.
    global_version: int = wire(_U63)
    #: Changed per-title neighbour lists: up to 2048 titles, 100 neighbours each.
    neighbours: Neighbours = wire(_neighbours(L.MAX_ITEMS), default=())
    #: Changed popularity scores (>= 0).
    popularity: ScoredIds = wire(_scored(L.MAX_ITEMS, 0.0), default=())
    #: The region's trending titles with their velocity.
    trends: ScoredIds = wire(_scored(L.MAX_ITEMS), default=())
    #: New titles with embeddings (and those asked for in ``want``), at most 64.
    new_content: tuple[NewContent, ...] = wire(_NEW_CONTENT_PULL, default=())
    #: The hub's current public key id, to seal reports to (0: none published yet).
    hub_key_id: int = wire(_KEY_ID, default=0)
    #: The hub's current X25519 public key (32 bytes; empty with key id 0).
    hub_public_key: bytes = wire(_PUBLIC_KEY, default=b"")
    #: The hub's Ed25519 signature of ``(hub_key_id, hub_public_key)``
    #: (``omega.federation.keysign``; 64 bytes, empty when unsigned). The TV adopts a
    #: new key only if it verifies with its provisioned verify key: the shard relays
    #: the announcement but cannot forge it.
    hub_key_sig: bytes = wire(_KEY_SIG, default=b"")


@message(tag=14, max_bytes=L.HEARTBEAT_MAX_BYTES)
class Heartbeat(Message):
    """I am alive (signed with a 16-byte truncated MAC; <= 64 bytes on the wire)."""

    #: The TV's id (<= 31 characters, so the frame fits 64 bytes).
    device_id: str = wire(_DEVICE_ID)
    #: Device wall time, milliseconds since the Unix epoch.
    ts_ms: int = wire(_TS_MS)
    #: Application health code, 0-127 (0: healthy); one byte on the wire.
    health: int = wire(integer(0, 127))
    #: First 16 bytes of HMAC-SHA256, set by ``sign``; empty when unsigned.
    sig: bytes = wire(blob(L.HEARTBEAT_MAC_BYTES), default=b"")


@message(tag=15, max_bytes=L.SMALL_MAX_BYTES)
class HeartbeatAck(Message):
    """Heartbeat received; tells the TV whether a pull would bring anything."""

    #: The newest global version the shard knows (0: unknown).
    global_version: int = wire(_U63, default=0)


# --- between servers ---------------------------------------------------------------


@message(tag=20, max_bytes=L.SERVER_MESSAGE_MAX_BYTES)
class ShardBatch(Message):
    """Sealed reports of at least k devices, shuffled, without identities: shard ->
    aggregator. The shard cannot open them; it forwards them as they came."""

    #: Content-addressed id (a hash of the batch's reports): the same on every retry
    #: and on every replica, so the aggregator stores a batch once.
    batch_id: str = wire(_CONTENT_ID)
    #: Up to 2048 opaque sealed reports, 1-1000 bytes each (a bigger bucket goes in parts).
    reports: tuple[bytes, ...] = wire(blob_list(L.MAX_ITEMS, L.MAX_REPORT_BYTES, 1))
    #: This frame's index when a batch is split into parts; ``(batch_id, part)`` is
    #: what the receiver de-duplicates by.
    part: int = wire(_PART, default=0)
    #: Number of parts of the batch.
    parts: int = wire(_PARTS, default=1)

    def _check_whole(self) -> None:
        _check_parts(self.part, self.parts)


@message(tag=21, max_bytes=L.SERVER_MESSAGE_MAX_BYTES)
class RegionBatch(Message):
    """Sealed reports mixed across the shards of a region: aggregator -> hub. Carries
    the region label and nothing that names a shard or a device."""

    #: The region (label): scopes trends.
    region: str = wire(_LABEL)
    #: Content-addressed id of this mix (the same on every retry).
    batch_id: str = wire(_CONTENT_ID)
    #: Up to 2048 opaque sealed reports.
    reports: tuple[bytes, ...] = wire(blob_list(L.MAX_ITEMS, L.MAX_REPORT_BYTES, 1))
    #: This frame's index when split into parts.
    part: int = wire(_PART, default=0)
    #: Number of parts.
    parts: int = wire(_PARTS, default=1)

    def _check_whole(self) -> None:
        _check_parts(self.part, self.parts)


@message(tag=23, max_bytes=L.SMALL_MAX_BYTES)
class BatchAck(Message):
    """A ``ShardBatch``/``RegionBatch`` part is stored durably (or was already)."""

    #: The acknowledged batch.
    batch_id: str = wire(_CONTENT_ID)
    #: The acknowledged part.
    part: int = wire(_PART, default=0)
    #: True when the receiver already held this part (a retry): nothing was added.
    duplicate: bool = wire(boolean(), default=False)


@message(tag=24, max_bytes=L.SMALL_MAX_BYTES)
class UpdateRequest(Message):
    """Catch-up, shard -> hub: one part of the newest release after ``since_version``
    (answered with a ``GlobalUpdate``; an empty one at ``since_version`` or below
    when nothing is newer)."""

    #: The newest release the asker holds completely (0: none).
    since_version: int = wire(_U63)
    #: Which part of the newest release to send.
    part: int = wire(_PART, default=0)


@message(tag=22, max_bytes=L.SERVER_MESSAGE_MAX_BYTES)
class GlobalUpdate(Message):
    """A global release (or a part of one), hub -> shards."""

    #: The release's global version.
    version: int = wire(_U63)
    #: Per-title neighbour lists.
    neighbours: Neighbours = wire(_neighbours(L.MAX_ITEMS), default=())
    #: Popularity scores (>= 0).
    popularity: ScoredIds = wire(_scored(L.MAX_ITEMS, 0.0), default=())
    #: Per-region trending titles with velocity.
    trends: RegionTrends = wire(_region_trends(), default=())
    #: New titles with embeddings.
    new_content: tuple[NewContent, ...] = wire(_NEW_CONTENT_ALL, default=())
    #: This frame's index when the release is split into parts.
    part: int = wire(_PART, default=0)
    #: Number of parts of the release.
    parts: int = wire(_PARTS, default=1)
    #: The hub's current public key id (0: not announced in this part).
    hub_key_id: int = wire(_KEY_ID, default=0)
    #: The hub's current X25519 public key (32 bytes; empty with key id 0).
    hub_public_key: bytes = wire(_PUBLIC_KEY, default=b"")
    #: The hub's Ed25519 signature of ``(hub_key_id, hub_public_key)`` (64 bytes, empty
    #: when unsigned), relayed unchanged to TVs in ``PullResp.hub_key_sig``.
    hub_key_sig: bytes = wire(_KEY_SIG, default=b"")
    #: What ``new_content`` covers: every registered title new or changed since release
    #: ``content_base`` (0: the whole registry). A shard counts the release as complete
    #: only if it holds every release up to the base (``omega.shard.state``).
    content_base: int = wire(_U63, default=0)

    def _check_whole(self) -> None:
        _check_parts(self.part, self.parts)
        if self.content_base and self.content_base >= self.version:
            raise Invalid(f"content_base {self.content_base} must be below the version "
                          f"{self.version}")


# --- operators -------------------------------------------------------------------


@message(tag=30, max_bytes=L.CTL_REQUEST_MAX_BYTES)
class CtlRequest(Message):
    """An operator command to a node (``omega-node ... ctl``)."""

    #: Command name (identifier), e.g. ``tree``, ``kill``, ``stats``.
    command: str = wire(ident(L.LABEL_MAX_LEN * 2))
    #: What it applies to (printable ASCII, no spaces, may be empty), e.g. an actor name.
    target: str = wire(printable(L.TARGET_MAX_LEN), default="")


@message(tag=31, max_bytes=L.JSON_MESSAGE_MAX_BYTES, maps=True)
class CtlReply(Message):
    """The result of a ``CtlRequest``."""

    #: Whether the command succeeded.
    ok: bool = wire(boolean())
    #: JSON-like result (depth <= 16, <= 65536 values); dicts are copied.
    payload: JsonValue = wire(_JSON, default=None, hash=False)


# --- the TV's local API ------------------------------------------------------------


@message(tag=40, max_bytes=L.TV_SMALL_MAX_BYTES)
class TvObserve(Message):
    """The viewer watched something."""

    #: Content id.
    content_id: str = wire(_CONTENT_ID)
    #: Fraction watched, 0.0-1.0.
    watch_fraction: float = wire(number(0.0, 1.0))
    #: When, seconds since the Unix epoch.
    timestamp: float = wire(_SECONDS)


@message(tag=41, max_bytes=L.TV_SMALL_MAX_BYTES)
class TvRecommend(Message):
    """Ask for the top ``k`` recommendations now."""

    #: How many, 1-100.
    k: int = wire(integer(1, L.MAX_RECOMMENDATIONS))
    #: The viewer's time, seconds since the Unix epoch.
    timestamp: float = wire(_SECONDS)


@message(tag=42, max_bytes=L.TV_REPLY_MAX_BYTES)
class TvRecommendReply(Message):
    """Recommendations, best first."""

    #: Up to 100 ``(content_id, score, reason)``; unique ids; reason <= 128 characters.
    items: tuple[RecommendationItem, ...] = wire(
        rows(
            _IDS,
            numbers(-L.FLOAT_BOUND, L.FLOAT_BOUND),
            texts(L.REASON_MAX_LEN),
            max_items=L.MAX_RECOMMENDATIONS,
        )
    )
    #: The display title of each item, in the same order (empty: not sent).
    titles: tuple[str, ...] = wire(
        list_of(texts(L.TITLE_MAX_LEN), L.MAX_RECOMMENDATIONS), default=()
    )


@message(tag=43, max_bytes=L.SERVER_MESSAGE_MAX_BYTES)
class TvImportCatalog(Message):
    """Add or replace catalog entries in the TV brain (split big catalogs)."""

    #: Up to 2048 entries with unique ids (the frame limit usually binds first).
    items: tuple[CatalogEntry, ...] = wire(_unique_ids(each(nested(CatalogEntry), L.MAX_ITEMS)))


@message(tag=44, max_bytes=L.SMALL_MAX_BYTES)
class TvStatus(Message):
    """Ask the TV brain for its status (answered with ``TvOk``)."""


@message(tag=45, max_bytes=L.JSON_MESSAGE_MAX_BYTES, maps=True)
class TvOk(Message):
    """Success, with an optional JSON-like payload."""

    #: JSON-like result (depth <= 16, <= 65536 values); dicts are copied.
    payload: JsonValue = wire(_JSON, default=None, hash=False)
