"""The co-view report: fixed size, opens only with the hub's key, every bad blob typed."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omega.errors import ProtocolError
from omega.federation.report import (
    REPORT_BYTES,
    CoView,
    HubKey,
    MalformedReport,
    OpenedReport,
    Randomizer,
    UnknownReportKey,
    UnopenableReport,
    coview,
    open_report,
    report_key_id,
    seal,
    title_key,
    windowed_pairs,
)
from omega.protocol import Push, encode
from omega.protocol import limits as L

KEY = HubKey.generate(7)
KEYS = {KEY.key_id: KEY}
IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:-", min_size=1, max_size=64)


@given(IDS, IDS, st.floats(min_value=0.004, max_value=1.0))
@settings(max_examples=60, deadline=None)
def test_a_sealed_coview_opens_to_itself(a: str, b: str, weight: float) -> None:
    if title_key(a) == title_key(b):
        return
    cv = coview(a, b, weight)
    blob = seal(cv, KEY.public_only())
    assert len(blob) == REPORT_BYTES
    assert open_report(KEYS, blob) == OpenedReport(7, cv)
    assert abs(cv.weight - weight) <= 1 / 510 + 1e-12
    assert coview(b, a, weight) == cv  # order-free


def test_dummies_and_coviews_have_one_size_and_tell_nothing_in_clear() -> None:
    cv = coview("tt0111161", "tt0068646", 1.0)
    blobs = [seal(cv, KEY), seal(None, KEY), seal(cv, KEY)]
    assert {len(b) for b in blobs} == {REPORT_BYTES}
    assert blobs[0] != blobs[2]  # fresh ephemeral key each time: no equality leak
    assert open_report(KEYS, blobs[1]) == OpenedReport(7, None)
    for blob in blobs:
        assert b"tt0111161" not in blob and title_key("tt0111161").to_bytes(8, "big") not in blob
        assert report_key_id(blob) == 7


def test_eight_reports_fit_a_signed_push_under_one_kilobyte() -> None:
    reports = tuple(seal(None, KEY) for _ in range(L.MAX_REPORTS))
    push = Push(device_id="d" * L.DEVICE_ID_MAX_LEN, seq=2**62, ts_ms=2**61,
                reports=reports, sig=b"s" * L.MAC_BYTES)
    assert len(encode(push)) <= L.PUSH_MAX_BYTES


def test_only_the_hub_private_key_opens_a_report() -> None:
    blob = seal(coview("a", "b", 1.0), KEY)
    with pytest.raises(UnknownReportKey):
        open_report({}, blob)
    with pytest.raises(UnknownReportKey):  # a TV's public-only copy cannot open
        open_report({7: KEY.public_only()}, blob)
    impostor = HubKey.generate(7)
    with pytest.raises(UnopenableReport):
        open_report({7: impostor}, blob)


def test_rotation_opens_reports_sealed_to_the_previous_key() -> None:
    new = HubKey.generate(8)
    old_blob, new_blob = seal(coview("a", "b", 1.0), KEY), seal(None, new)
    both = {7: KEY, 8: new}
    assert open_report(both, old_blob).key_id == 7
    assert open_report(both, new_blob).key_id == 8


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b"",
        lambda b: bytes([2]) + b[1:],  # unknown format
        lambda b: b[:5] + bytes(REPORT_BYTES - 5),
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # one bit of the MAC
        lambda b: b[:20] + bytes([b[20] ^ 0x80]) + b[21:],
    ],
)
def test_every_mangled_blob_is_a_typed_report_error(mangle: object) -> None:
    blob = seal(coview("a", "b", 0.5), KEY)
    with pytest.raises(ProtocolError):
        open_report(KEYS, mangle(blob))  # type: ignore[operator]


@given(st.binary(min_size=0, max_size=200))
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_open_and_never_raise_anything_untyped(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        open_report(KEYS, data)


def test_a_forged_plaintext_layout_is_malformed() -> None:
    from nacl.public import PublicKey, SealedBox

    def forged(plain: bytes) -> bytes:
        return bytes([1]) + (7).to_bytes(4, "big") + SealedBox(PublicKey(KEY.public)).encrypt(plain)

    for plain in [
        bytes([1, 255, 0, 0]) + (5).to_bytes(8, "big") + (5).to_bytes(8, "big"),  # a == b
        bytes([1, 0, 0, 0]) + (1).to_bytes(8, "big") + (5).to_bytes(8, "big"),  # weight 0
        bytes([9]) + bytes(19),  # unknown kind
        bytes([0, 1]) + bytes(18),  # dummy carrying a weight
        bytes(21),  # wrong length
    ]:
        with pytest.raises(MalformedReport):
            open_report(KEYS, forged(plain))


def test_windowed_pairs_pair_each_view_with_the_previous_window() -> None:
    views = [("a", 1.0), ("b", 1.0), ("c", 0.3), ("a", 1.0), ("d", 1.0)]
    pairs = windowed_pairs(views, window=2)
    assert pairs == [
        ("a", "b", 1.0),
        ("a", "c", 0.3), ("b", "c", 0.3),
        ("a", "b", 1.0), ("a", "c", 0.3),
        ("c", "d", 0.3), ("a", "d", 1.0),
    ]
    # Only the new views' pairs, for a TV that already reported the first three.
    assert windowed_pairs(views, window=2, start=3) == pairs[3:]
    with pytest.raises(ValueError):
        windowed_pairs(views, window=0)


def test_randomizer_keeps_at_its_rate_and_its_epsilon_is_generalized_rr() -> None:
    keys = [title_key(f"m{i}") for i in range(100)]
    cv = CoView(min(keys[0], keys[1]), max(keys[0], keys[1]), 1.0)
    rng = random.Random(3)
    r = Randomizer(keep=0.25)
    kept = sum(r.apply(cv, keys, rng) == cv for _ in range(4000))
    d = 100 * 99 / 2
    assert abs(kept / 4000 - (0.25 + 0.75 / d)) < 0.03
    assert math.isclose(r.epsilon(100), math.log(1 + 0.25 * d / 0.75))
    assert Randomizer(keep=0.0).epsilon(100) == 0.0
    assert Randomizer(keep=1.0).epsilon(100) == math.inf
    # The estimate undoes the randomization on average.
    assert math.isclose(r.estimate(0.25 * 10 + 4000 * 0.75 / d, 4000, 100), 10.0)


def test_bad_keys_and_coviews_are_refused() -> None:
    with pytest.raises(ValueError):
        HubKey(0, KEY.public)
    with pytest.raises(ValueError):
        HubKey(1, b"short")
    with pytest.raises(ValueError):
        HubKey(KEY.key_id, HubKey.generate(1).public, KEY.private)  # mismatched pair
    with pytest.raises(ValueError):
        CoView(5, 5, 1.0)
    with pytest.raises(ValueError):
        coview("a", "a", 1.0)
    with pytest.raises(ValueError):
        coview("a", "b", float("nan"))
    assert "private" in repr(KEY) and KEY.private is not None and KEY.private.hex() not in repr(KEY)
