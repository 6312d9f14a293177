"""Co-view reports: what a TV contributes to the crowd, and how the hub opens it.

The one module both halves of the crowd loop import: the TV builds, randomizes and
seals reports (``windowed_pairs`` → ``coview`` → ``Randomizer.apply`` → ``seal``);
the hub opens them (``open_report``); the shards and the aggregator see only
``REPORT_BYTES`` opaque bytes and the key id.

A report carries ONE pair of titles the viewer watched close together in time
(DESIGN.md §7, BENCHMARKS.md §1: windowed pairs carry most of what the crowd
knows), or nothing at all (a *dummy*, which fills a push so that the number and
size of reports tell nothing). Titles travel as 64-bit keys (``title_key``), so
every report has the same length whatever the ids; the hub maps keys back to ids
with its catalog.

Wire layout of a sealed report (``REPORT_BYTES`` = 73 bytes)::

    [0]      format (REPORT_FORMAT)
    [1:5]    hub key id, u32 big-endian, in clear (the hub rotates keys)
    [5:]     libsodium sealed box (X25519 + XSalsa20-Poly1305, 48 bytes overhead)
             of the 20-byte plaintext:
               [0]      kind: 0 dummy, 1 co-view
               [1]      weight, 1-255 (weight = byte / 255); 0 for a dummy
               [2:4]    zero
               [4:12]   title key a, u64 big-endian (a < b)
               [12:20]  title key b, u64 big-endian
             a dummy's plaintext is all zeros after the kind byte.

Local randomization (``Randomizer``): with probability ``keep`` the true pair is
sent, otherwise a pair drawn uniformly from the TV's catalog — generalized
randomized response over the d = n(n-1)/2 unordered pairs of an n-title catalog,
so one report is ε₀-LDP for its pair with ε₀ = ln(1 + keep·d / (1 − keep))
(``Randomizer.epsilon``). Over a large catalog ε₀ is large: the local step hides
*which* of a TV's reports are true, while the strong guarantees come from the
split trust (shards and aggregator cannot open reports; the hub sees no identity)
and the hub's central noise (``omega.federation.release``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from omega.errors import ProtocolError

__all__ = [
    "KEY_ID_MAX",
    "PLAIN_BYTES",
    "REPORT_BYTES",
    "REPORT_FORMAT",
    "CoView",
    "HubKey",
    "MalformedReport",
    "OpenedReport",
    "Randomizer",
    "ReportError",
    "UnknownReportKey",
    "UnopenableReport",
    "coview",
    "open_report",
    "report_key_id",
    "seal",
    "title_key",
    "windowed_pairs",
]

REPORT_FORMAT = 1
PLAIN_BYTES = 20
_HEADER = struct.Struct(">BI")  # format, key id
_PLAIN = struct.Struct(">BBHQQ")  # kind, weight, zero, a, b
#: libsodium's sealed-box overhead: an ephemeral public key and a MAC.
SEAL_OVERHEAD = 48
REPORT_BYTES = _HEADER.size + SEAL_OVERHEAD + PLAIN_BYTES
KEY_ID_MAX = 2**32 - 1
_KIND_DUMMY = 0
_KIND_COVIEW = 1
_U64_MAX = 2**64 - 1


class ReportError(ProtocolError):
    """A report blob could not be opened. Nothing was counted from it."""

    code = "bad_request"


class MalformedReport(ReportError):
    """Wrong length, format or plaintext layout: not a report of ours."""


class UnknownReportKey(ReportError):
    """Sealed to a key id the hub does not hold (never issued, or retired)."""


class UnopenableReport(ReportError):
    """The sealed box does not open with the key its id names (forged or damaged)."""


def title_key(content_id: str) -> int:
    """A title's 64-bit key: BLAKE2b-64 of its id (UTF-8), big-endian.

    Collisions among a million titles happen with probability ~3·10⁻⁸; the hub,
    which maps keys back to ids, drops a key it cannot resolve.
    """
    if not isinstance(content_id, str) or not content_id:
        raise ValueError("a content id is a non-empty string")
    digest = hashlib.blake2b(content_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class CoView:
    """Two titles watched close together (keys ``a < b``), with their view weight."""

    a: int
    b: int
    #: In (0, 1]; carried as a byte, so it is quantized to 1/255 (``coview`` does it).
    weight: float

    def __post_init__(self) -> None:
        if not (isinstance(self.a, int) and isinstance(self.b, int)
                and 0 <= self.a < self.b <= _U64_MAX):
            raise ValueError(f"a co-view needs keys 0 <= a < b < 2^64, got {self.a}, {self.b}")
        if not (isinstance(self.weight, float | int) and 0.0 < self.weight <= 1.0):
            raise ValueError(f"a co-view weight is in (0, 1], got {self.weight!r}")


@dataclass(frozen=True)
class OpenedReport:
    """What the hub learns from one report: the key it was sealed to and the pair."""

    key_id: int
    #: ``None`` for a dummy report.
    coview: CoView | None


def _weight_byte(weight: float) -> int:
    return max(1, min(255, round(weight * 255)))


def coview(a_id: str, b_id: str, weight: float) -> CoView:
    """The canonical co-view of two distinct titles (order-free, weight quantized)."""
    ka, kb = title_key(a_id), title_key(b_id)
    if ka == kb:
        raise ValueError(f"a co-view needs two distinct titles, got {a_id!r} twice")
    if not (math.isfinite(weight) and 0.0 < weight <= 1.0):
        raise ValueError(f"a co-view weight is in (0, 1], got {weight!r}")
    return CoView(min(ka, kb), max(ka, kb), _weight_byte(weight) / 255)


def windowed_pairs(views: Sequence[tuple[str, float]], window: int = 3,
                   start: int = 0) -> list[tuple[str, str, float]]:
    """Pairs of views at most ``window`` positions apart, as ``(a, b, weight)``, a < b.

    ``views`` are oldest first, each ``(content_id, view weight)`` with the weight the
    recommender gives the view (1 for a successful view, less for an abandoned one).
    A pair's weight is the product of its two views' weights; repeats of one title
    make no pair. Only views at positions ``>= start`` pair with their predecessors,
    so a TV that reported up to position ``start`` gets only its new pairs.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out: list[tuple[str, str, float]] = []
    for i in range(max(start, 1), len(views)):
        cid, w = views[i]
        for j in range(max(0, i - window), i):
            other, wo = views[j]
            if other == cid:
                continue
            weight = w * wo
            if weight <= 0:
                continue
            a, b = (cid, other) if cid < other else (other, cid)
            out.append((a, b, weight))
    return out


@dataclass(frozen=True)
class Randomizer:
    """Generalized randomized response over the unordered pairs of a TV's catalog."""

    #: Probability that the true pair is sent; otherwise a uniformly random pair.
    keep: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.keep, float | int) and 0.0 <= self.keep <= 1.0):
            raise ValueError(f"keep is a probability in [0, 1], got {self.keep!r}")

    def apply(self, cv: CoView, keys: Sequence[int], rng: random.Random) -> CoView:
        """``cv`` with probability ``keep``, else a uniform pair of distinct ``keys``."""
        if rng.random() < self.keep:
            return cv
        if len(keys) < 2:
            raise ValueError("randomizing needs a catalog of at least two titles")
        i, j = rng.sample(range(len(keys)), 2)
        a, b = keys[i], keys[j]
        if a == b:  # duplicate keys in the catalog: fall back on the true pair
            return cv
        return CoView(min(a, b), max(a, b), cv.weight)

    def epsilon(self, n_titles: int) -> float:
        """Local ε of one report over a catalog of ``n_titles`` (∞ when ``keep`` is 1)."""
        pairs = n_titles * (n_titles - 1) / 2
        if self.keep >= 1.0:
            return math.inf
        if self.keep <= 0.0 or pairs <= 1:
            return 0.0
        return math.log1p(self.keep * pairs / (1.0 - self.keep))

    def estimate(self, observed: float, total: float, n_titles: int) -> float:
        """Unbiased estimate of a pair's true weight from its randomized sum.

        ``observed``: the pair's summed weight; ``total``: the summed weight of all
        co-view reports. Each report lands on a given pair by chance with probability
        ``(1 - keep) / d``.
        """
        if self.keep <= 0.0:
            raise ValueError("keep = 0 reports nothing true: nothing to estimate")
        pairs = max(1.0, n_titles * (n_titles - 1) / 2)
        return (observed - total * (1.0 - self.keep) / pairs) / self.keep


@dataclass(frozen=True)
class HubKey:
    """One of the hub's X25519 key pairs; TVs hold only ``public_only()`` copies."""

    key_id: int
    public: bytes
    private: bytes | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.key_id, int) and 1 <= self.key_id <= KEY_ID_MAX):
            raise ValueError(f"a hub key id is in [1, 2^32 - 1], got {self.key_id!r}")
        if not (isinstance(self.public, bytes) and len(self.public) == PublicKey.SIZE):
            raise ValueError(f"a hub public key is {PublicKey.SIZE} bytes")
        if self.private is not None:
            if not (isinstance(self.private, bytes) and len(self.private) == PrivateKey.SIZE):
                raise ValueError(f"a hub private key is {PrivateKey.SIZE} bytes")
            if bytes(PrivateKey(self.private).public_key) != self.public:
                raise ValueError("the hub's private key does not match its public key")

    @classmethod
    def generate(cls, key_id: int) -> HubKey:
        sk = PrivateKey.generate()
        return cls(key_id, bytes(sk.public_key), bytes(sk))

    @classmethod
    def from_private(cls, key_id: int, private: bytes) -> HubKey:
        return cls(key_id, bytes(PrivateKey(private).public_key), private)

    def public_only(self) -> HubKey:
        return HubKey(self.key_id, self.public)

    def __repr__(self) -> str:  # never print a private key
        return f"HubKey(key_id={self.key_id}, private={'yes' if self.private else 'no'})"


def seal(cv: CoView | None, key: HubKey) -> bytes:
    """Seal one co-view (``None``: a dummy) to the hub's public key: ``REPORT_BYTES`` long."""
    if cv is None:
        plain = _PLAIN.pack(_KIND_DUMMY, 0, 0, 0, 0)
    else:
        plain = _PLAIN.pack(_KIND_COVIEW, _weight_byte(cv.weight), 0, cv.a, cv.b)
    boxed = SealedBox(PublicKey(key.public)).encrypt(plain)
    blob = _HEADER.pack(REPORT_FORMAT, key.key_id) + bytes(boxed)
    assert len(blob) == REPORT_BYTES
    return blob


def report_key_id(blob: bytes) -> int:
    """The key id a report names in clear (``MalformedReport`` if it is not a report)."""
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) != REPORT_BYTES:
        size = len(blob) if isinstance(blob, bytes | bytearray | memoryview) else None
        raise MalformedReport(f"a report is {REPORT_BYTES} bytes, got {size}")
    fmt, key_id = _HEADER.unpack_from(blob)
    if fmt != REPORT_FORMAT:
        raise MalformedReport(f"unknown report format {fmt} (this hub reads {REPORT_FORMAT})")
    return int(key_id)


@functools.lru_cache(maxsize=8)
def _opening_box(private: bytes) -> SealedBox[PrivateKey]:
    # Building a PrivateKey derives its public key (one X25519 scalar multiplication,
    # as costly as the opening itself): built once per key, the hub opens 1.6x faster.
    return SealedBox(PrivateKey(private))


def open_report(keys: Mapping[int, HubKey], blob: bytes) -> OpenedReport:
    """Open one sealed report with the hub's keys; every bad blob is a ``ReportError``."""
    key_id = report_key_id(blob)
    key = keys.get(key_id)
    if key is None or key.private is None:
        raise UnknownReportKey(f"report sealed to key id {key_id}, which this hub does not hold")
    try:
        plain = _opening_box(key.private).decrypt(bytes(blob[_HEADER.size:]))
    except CryptoError as exc:
        raise UnopenableReport(f"report does not open with key id {key_id}") from exc
    if len(plain) != PLAIN_BYTES:
        raise MalformedReport(f"report plaintext is {len(plain)} bytes, not {PLAIN_BYTES}")
    kind, wbyte, zero, a, b = _PLAIN.unpack(plain)
    if kind == _KIND_DUMMY:
        if wbyte or zero or a or b:
            raise MalformedReport("a dummy report carries nothing but its kind")
        return OpenedReport(key_id, None)
    if kind != _KIND_COVIEW:
        raise MalformedReport(f"unknown report kind {kind}")
    if zero or wbyte == 0 or not a < b:
        raise MalformedReport("a co-view report needs weight 1-255, zero padding and a < b")
    return OpenedReport(key_id, CoView(a, b, wbyte / 255))
