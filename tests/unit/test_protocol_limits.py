"""Hostile frames built to exhaust memory are refused cheaply.

Each bomb is decoded under tracemalloc; the peak of Python allocations during the
call must stay under 50 MB, and the call must raise a ProtocolError.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator

import pytest

from omega.protocol import (
    MAX_FRAME,
    MAX_FRAME_BYTES,
    BadRequest,
    CtlReply,
    Message,
    ProtocolError,
    TooLarge,
    decode,
)
from omega.protocol.limits import MAX_ITEMS

LIMIT = 50 * 1024 * 1024


@pytest.fixture(autouse=True)
def _traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def peak_of_decode(frame: bytes) -> tuple[int, ProtocolError]:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    return tracemalloc.get_traced_memory()[1] - base, info.value


def array32(n: int) -> bytes:
    return b"\xdd" + struct.pack(">I", n)


def array16(n: int) -> bytes:
    return b"\xdc" + struct.pack(">H", n)


def test_five_megabytes_of_empty_maps() -> None:
    n = 5_000_000
    bare = array32(n) + b"\x80" * n
    tagged = array32(n + 2) + b"\x14\x01" + b"\x80" * n  # claims to be a ShardBatch
    for frame in (bare, tagged):
        peak, err = peak_of_decode(frame)
        assert isinstance(err, TooLarge)
        assert peak < 1024 * 1024  # refused on its length, nothing decoded


def test_deep_nesting() -> None:
    for depth in (1_000, 100_000, 1_000_000):
        frame = b"\x93\x2d\x01" + b"\x91" * depth + b"\xc0"  # TvOk, payload [[[...]]]
        peak, err = peak_of_decode(frame[: MAX_FRAME[CtlReply]])
        assert isinstance(err, BadRequest)
        assert peak < LIMIT


ATOMS = {
    # The cheapest-to-send, costliest-to-build msgpack objects.
    "empty maps": b"\x80",
    "one-element arrays": b"\x91\xc0",
    "two-char strings": b"\xa2ab",
    "one-byte bins": b"\xc4\x01x",
    "floats": b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x01",
    "big ints": b"\xcd\x12\x34",
}


def bombs_for(cls: type[Message]) -> dict[str, bytes]:
    """Frames exactly at the type's size limit whose every byte builds an object."""
    cap = cls.MAX_BYTES
    claim = min(MAX_ITEMS, cap // 2)  # within the decoder's max_array_len
    head = array16(claim) + bytes([cls.TAG, 1])
    room = cap - len(head)
    # Each open array pre-allocates its claimed slots; msgpack nests at most 1024
    # deep (the head is one level, an atom may be another).
    levels = min(1021, room // 2 // 3)
    nest = array16(claim) * levels
    bombs = {}
    for name, atom in ATOMS.items():
        per = min(claim, (room - 3) // len(atom))
        inner = array16(per) + atom * per
        wide = inner * (room // len(inner))
        bombs[f"wide {name}"] = head + wide + inner[: room - len(wide)]
        deep = head + nest + atom * ((room - len(nest)) // len(atom))
        bombs[f"deep {name}"] = deep
    return bombs


def representatives() -> list[type[Message]]:
    """One type per (frame limit, maps allowed): what a bomb can cost depends on
    nothing else, since every byte is decoded before any field check runs."""
    seen: dict[tuple[int, bool], type[Message]] = {}
    for cls in sorted(MAX_FRAME, key=lambda c: c.TAG):
        seen.setdefault((cls.MAX_BYTES, cls._MAPS), cls)
    return list(seen.values())


@pytest.mark.parametrize("cls", representatives(), ids=lambda c: c.__name__)
def test_bombs_at_each_type_limit(cls: type[Message]) -> None:
    for name, frame in bombs_for(cls).items():
        assert len(frame) <= cls.MAX_BYTES, name
        peak, err = peak_of_decode(frame)
        assert peak < LIMIT, f"{cls.__name__} {name}: {peak / 1e6:.1f} MB"
        # One past the limit is refused before decoding.
        over = frame + b"\xc0" * (cls.MAX_BYTES + 1 - len(frame))
        peak, err = peak_of_decode(over)
        assert isinstance(err, TooLarge), name
        assert peak < 1024 * 1024


def test_global_limit_is_the_largest_type_limit() -> None:
    assert max(MAX_FRAME.values()) == MAX_FRAME_BYTES
