"""Fuzzing the decoder: whatever bytes arrive, only ProtocolError comes out.

Frames are valid frames mutated (bit flips, truncation, splices, overwrites,
insertions, type markers), random msgpack structures under real tags, and random
bytes. Hypothesis draws a seed per frame and the mutations follow from it, which
keeps an example cheap enough for 10,000 of them in a normal test run; a second,
smaller test lets hypothesis build the structures itself (better shrinking).
Derandomized: every run checks the same frames.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol_samples import FRAMES

from omega.protocol import MAX_FRAME, Message, ProtocolError, TooLarge, decode, encode

TAGS = sorted(cls.TAG for cls in MAX_FRAME)
# msgpack type bytes: map, array, nil, unused, bools, bin, ext, floats, ints, str, ...
MARKERS = bytes.fromhex("8090c0c1c2c3c4c7cacbcfd3d4d9dcdddedfff7f00a0bf")


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_decode(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except ProtocolError as exc:
        assert exc.code  # a typed error with a wire code
        return
    # Accepted: it is a valid message, and it survives its own round trip.
    assert isinstance(msg, Message)
    try:
        again = encode(msg)
    except TooLarge:
        return  # a non-canonical frame (e.g. float32) can grow when re-encoded
    assert decode(again) == msg


def mutate(seed: int) -> bytes:
    rng = random.Random(seed)
    frame = bytearray(rng.choice(FRAMES))
    for _ in range(rng.randint(1, 4)):
        n = len(frame)
        at = rng.randrange(n) if n else 0
        op = rng.randrange(6)
        if op == 0 and n:  # flip a bit
            frame[at] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del frame[at:]
        elif op == 2:  # splice in a slice of another frame
            other = rng.choice(FRAMES)
            i = rng.randint(0, len(other))
            frame[at:at] = other[i : rng.randint(i, len(other))]
        elif op == 3:  # overwrite with random bytes
            chunk = rng.randbytes(rng.randint(1, 8))
            frame[at : at + len(chunk)] = chunk
        elif op == 4:  # insert a random byte
            frame.insert(at, rng.randrange(256))
        elif n:  # a msgpack type marker where something else was
            frame[at] = rng.choice(MARKERS)
    return bytes(frame)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 127, 128, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    if kind == 3:
        return rng.choice([0.0, -0.5, 1.0, 1e300, float("nan"), float("inf"), 5e-324])
    if kind == 4:
        return rng.choice(["m1", "tv-1", "eu-west", "", "ok", "x" * 70, "a b", "é"])
    if kind == 5:
        return rng.choice([b"", b"r", bytes(768), bytes(32), bytes(16)])
    if kind in (6, 7):
        return rng.choice([[], {}, [["m1", 1.0]], [["m1", [["m2", 0.5]]]]])
    if kind == 8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["a", "b", ""]): random_value(rng, depth + 1) for _ in range(3)}


def structured(seed: int) -> bytes:
    rng = random.Random(seed)
    cls = rng.choice(list(MAX_FRAME))
    version = rng.choice([1, 1, 1, 1, 0, 2, True])
    n = len(cls._names) + rng.choice([0, 0, 0, -1, 1])
    fields = [random_value(rng) for _ in range(max(n, 0))]
    return msgpack.packb([cls.TAG, version, *fields], use_bin_type=True)


SEEDS = st.integers(0, 2**64 - 1)
FRAMES_STRATEGY = st.one_of(
    st.builds(mutate, SEEDS),
    st.builds(mutate, SEEDS),
    st.builds(structured, SEEDS),
    st.binary(max_size=300),
    st.builds(
        lambda tag, tail: bytes([0x95, tag, 1]) + tail,
        st.sampled_from(TAGS),
        st.binary(max_size=200),
    ),
)


@fuzz_settings(10_000)
@given(FRAMES_STRATEGY)
def test_decoder_raises_only_protocol_errors(frame: bytes) -> None:
    check_decode(frame)


def msgpack_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=70),
        st.binary(max_size=800),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    )


@fuzz_settings(300)
@given(st.sampled_from(TAGS), st.lists(msgpack_values(), max_size=8))
def test_decoder_on_hypothesis_structures(tag: int, fields: list[Any]) -> None:
    check_decode(msgpack.packb([tag, 1, *fields], use_bin_type=True))


def test_mutations_reach_deep_validation() -> None:
    """The fuzz corpus is not all rejected at the frame level: some mutants decode
    (so field checks see odd values), and the errors cover several codes."""
    accepted, codes = 0, set()
    for seed in range(3000):
        try:
            decode(mutate(seed))
            accepted += 1
        except ProtocolError as exc:
            codes.add(exc.code)
    assert accepted > 30
    assert {"bad_request", "unknown_type", "too_large", "version"} <= codes
