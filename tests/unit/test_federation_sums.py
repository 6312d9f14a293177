"""Co-view sums: exact merge in any order, clipping, bytes (omega.federation.sums)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omega.federation.report import CoView, coview
from omega.federation.sums import BatchStats, CoviewSums, SumsError
from omega.federation.trends import RegionWindow, TrendsError

KEYS = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def coviews(draw: st.DrawFn) -> CoView:
    a = draw(st.integers(min_value=0, max_value=30))
    b = draw(st.integers(min_value=0, max_value=30).filter(lambda x: x != a))
    byte = draw(st.integers(min_value=1, max_value=255))
    return CoView(min(a, b), max(a, b), byte / 255)


def _sum(cvs: list[CoView]) -> CoviewSums:
    s = CoviewSums()
    for cv in cvs:
        s.add(cv)
    return s


@settings(max_examples=60, deadline=None)
@given(st.lists(coviews(), max_size=60), st.integers(min_value=1, max_value=6), st.randoms())
def test_merge_in_any_order_or_grouping_gives_equal_sums(
    cvs: list[CoView], groups: int, rnd: random.Random
) -> None:
    whole = _sum(cvs)
    shuffled = list(cvs)
    rnd.shuffle(shuffled)
    parts = [_sum(shuffled[i::groups]) for i in range(groups)]
    rnd.shuffle(parts)
    # Merge as a random tree: repeatedly merge two random parts.
    while len(parts) > 1:
        x = parts.pop(rnd.randrange(len(parts)))
        y = parts.pop(rnd.randrange(len(parts)))
        x.merge(y)
        parts.append(x)
    assert parts[0] == whole
    assert parts[0].to_bytes() == whole.to_bytes()
    assert whole.reports == len(cvs)


@settings(max_examples=40, deadline=None)
@given(st.lists(coviews(), max_size=40))
def test_bytes_round_trip(cvs: list[CoView]) -> None:
    s = _sum(cvs)
    back = CoviewSums.from_bytes(s.to_bytes())
    assert back == s
    for cv in cvs:
        assert back.pair(cv.a, cv.b) == s.pair(cv.a, cv.b)


def test_counts_pairs_and_titles_exactly() -> None:
    s = CoviewSums()
    s.add(coview("x", "y", 1.0))
    s.add(coview("y", "x", 0.3))
    cv = coview("x", "z", 0.5)
    s.add(cv)
    xy = coview("x", "y", 1.0)
    w, n = s.pair(xy.a, xy.b)
    assert n == 2 and w == pytest.approx(1.0 + round(0.3 * 255) / 255)  # 0.3 travels as a byte
    assert s.pair(xy.b, xy.a) == (w, n)  # unordered
    tw, tn = s.title(cv.a if cv.a != xy.a and cv.a != xy.b else cv.b)
    assert tn == 1 and tw == pytest.approx(128 / 255)
    assert s.reports == 3 and s.n_pairs == 2 and s.n_titles == 3


def test_add_batch_clips_what_one_batch_adds_to_a_pair() -> None:
    s = CoviewSums()
    flood = [CoView(1, 2, 1.0)] * 50 + [CoView(3, 4, 1.0)]
    stats = s.add_batch(flood, pair_cap=10, title_cap=100)
    assert stats == BatchStats(51, 40.0, 1, 0)
    assert s.pair(1, 2) == (10.0, 50)
    assert s.pair(3, 4) == (1.0, 1)
    # A second batch may add up to the cap again.
    s.add_batch([CoView(1, 2, 1.0)] * 20, pair_cap=10, title_cap=100)
    assert s.pair(1, 2)[0] == 20.0


def test_add_batch_clips_titles() -> None:
    s = CoviewSums()
    stats = s.add_batch([CoView(1, k, 1.0) for k in range(2, 30)], pair_cap=5, title_cap=10)
    assert s.title(1)[0] == 10.0
    assert stats.clipped_titles == 1 and stats.clipped_weight == 18.0


def test_bad_report_in_a_batch_changes_nothing() -> None:
    s = CoviewSums()
    s.add(CoView(1, 2, 1.0))
    before = s.to_bytes()

    class Bad:
        a, b, weight = 5, 3, 1.0

    with pytest.raises(SumsError):
        s.add_batch([CoView(1, 2, 1.0), Bad()])
    nan = type("Nan", (), {"a": 1, "b": 2, "weight": float("nan")})()
    with pytest.raises(SumsError):
        s.add(nan)
    assert s.to_bytes() == before


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\x81\xa6format\x02", b"garbage" * 5])
def test_from_bytes_refuses_junk(junk: bytes) -> None:
    with pytest.raises(SumsError):
        CoviewSums.from_bytes(junk)


def test_from_bytes_refuses_torn_columns() -> None:
    import msgpack

    doc = msgpack.unpackb(_sum([CoView(1, 2, 1.0)]).to_bytes())
    doc["pw"] = b""
    with pytest.raises(SumsError):
        CoviewSums.from_bytes(msgpack.packb(doc))


@settings(max_examples=40, deadline=None)
@given(st.lists(coviews(), max_size=40), st.integers(min_value=1, max_value=4))
def test_region_windows_merge_by_addition(cvs: list[CoView], groups: int) -> None:
    whole = RegionWindow()
    whole.add_batch(cvs)
    parts = [RegionWindow() for _ in range(groups)]
    for i, cv in enumerate(cvs):
        parts[i % groups].add(cv)
    merged = RegionWindow()
    for p in reversed(parts):
        merged.merge(p)
    assert merged == whole
    merged.roll()
    assert RegionWindow.from_bytes(merged.to_bytes()) == merged
    assert merged.periods == 1 and not merged.recent


def test_region_window_refuses_junk() -> None:
    with pytest.raises(TrendsError):
        RegionWindow.from_bytes(b"\x01\x02")
