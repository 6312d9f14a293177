"""Releases: calibrated noise, thresholds, lists, trends, accounting (omega.federation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omega.federation.accountant import (
    AccountantError,
    PrivacyAccountant,
    gaussian_epsilon,
    gaussian_sigma,
)
from omega.federation.release import (
    ReleaseError,
    ReleaseSettings,
    build_release,
    noisy_select,
    sensitivity,
)
from omega.federation.report import CoView, title_key
from omega.federation.sums import CoviewSums
from omega.federation.trends import RegionWindow

IDS = [f"t{i}" for i in range(60)]
CATALOG = {title_key(c): c for c in IDS}


def _pair(x: str, y: str) -> tuple[int, int]:
    a, b = title_key(x), title_key(y)
    return min(a, b), max(a, b)


def _sums(counts: dict[tuple[str, str], int]) -> CoviewSums:
    s = CoviewSums()
    for (x, y), n in counts.items():
        a, b = _pair(x, y)
        for _ in range(n):
            s.add(CoView(a, b, 1.0))
    return s


# -- accountant ---------------------------------------------------------------------


def test_calibrated_sigma_gives_the_stated_epsilon() -> None:
    for eps in (0.5, 1.0, 4.0):
        sigma = gaussian_sigma(eps, 1e-6)
        assert gaussian_epsilon(sigma, 1e-6) == pytest.approx(eps, rel=0.03)


def test_accountant_composes_and_round_trips() -> None:
    acc = PrivacyAccountant()
    assert acc.epsilon(1e-6) == 0.0
    sigma = gaussian_sigma(1.0, 1e-6)
    acc.spend(3 * sigma, 3.0)
    one = acc.epsilon(1e-6)
    for _ in range(9):
        acc.spend(sigma, 1.0)
    ten = acc.epsilon(1e-6)
    assert acc.releases == 10
    # Composition is sublinear (PLD) but far above one release.
    assert 2.5 * one < ten < 10 * one
    back = PrivacyAccountant.from_bytes(acc.to_bytes())
    assert back == acc and back.epsilon(1e-6) == ten
    acc.spend(0.0, 1.0)
    assert math.isinf(acc.epsilon(1e-6))


@pytest.mark.parametrize(
    "junk", [b"", b"\x92\x01\x02", b"\x82\xa6format\x01\xa5spent\x91\x92\xff\x00"]
)
def test_accountant_refuses_junk(junk: bytes) -> None:
    with pytest.raises(AccountantError):
        PrivacyAccountant.from_bytes(junk)


def test_accountant_refuses_bad_spends() -> None:
    acc = PrivacyAccountant()
    for sigma, sens in ((-1.0, 1.0), (1.0, 0.0), (math.nan, 1.0)):
        with pytest.raises(AccountantError):
            acc.spend(sigma, sens)
    assert acc.releases == 0


# -- settings --------------------------------------------------------------------------


def test_sensitivity_counts_pairs_titles_and_regions() -> None:
    # 1 report: pair 1, two titles 1 each, twice (global and region): sqrt(1 + 2*2).
    assert sensitivity(1, 1, 6) == pytest.approx(math.sqrt(5))
    # 12 reports: 12 pairs; titles: 24 title slots, at most 6 each -> 4 titles of 6.
    assert sensitivity(12, 1, 6) == pytest.approx(math.sqrt(12 + 2 * 4 * 36))


def test_fleet_scales_the_noise_down() -> None:
    real = ReleaseSettings(contributions=10)
    fleet = ReleaseSettings(contributions=10, fleet_size=1_000_000, population=1000)
    assert real.sigma == pytest.approx(real.sensitivity * gaussian_sigma(1.0, 1e-6))
    assert fleet.effective_sigma == pytest.approx(real.sigma / 1000)
    assert ReleaseSettings(noise=False).sigma == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"epsilon": 0}, {"delta": 1.0}, {"top_k": 0}, {"min_contributors": 0},
     {"fleet_size": 10}, {"fleet_size": 10, "population": 100}, {"normalize": "x"}],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ReleaseError):
        ReleaseSettings(**kwargs)  # type: ignore[arg-type]


# -- noise and thresholds -------------------------------------------------------------------


def test_noise_has_the_stated_scale() -> None:
    counts = {(IDS[i], IDS[j]): 1000 for i in range(40) for j in range(i + 1, 40)}
    s = ReleaseSettings(contributions=4, top_k=200, normalize="none", min_contributors=1)
    rel = build_release(_sums(counts), CATALOG, s, np.random.default_rng(1))
    assert rel.sigma == pytest.approx(s.sigma)
    values = np.array([v for lst in rel.neighbours.values() for _, v in lst])
    # Each of the 780 pairs appears twice (once per title): the noise, seen twice.
    assert values.size == 2 * 780
    dev = values - 1000.0
    assert abs(dev.mean()) < 4 * s.sigma / math.sqrt(780)
    assert dev.std() == pytest.approx(s.sigma, rel=0.1)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 50), st.integers(0, 60)), min_size=1, max_size=80),
    st.floats(0, 20),
    st.floats(0, 5),
    st.integers(1, 5),
    st.integers(0, 2**32),
)
def test_noisy_select_never_publishes_below_threshold(
    rows: list[tuple[float, int]], sigma: float, c: float, min_c: int, seed: int
) -> None:
    values = np.array([r[0] for r in rows])
    reports = np.array([r[1] for r in rows], dtype=np.int64)
    mask, noisy = noisy_select(values, reports, sigma=sigma, threshold=c * sigma,
                               min_contributors=min_c, rng=np.random.default_rng(seed))
    assert bool((noisy[mask] >= c * sigma).all())
    assert bool((reports[mask] >= min_c).all())
    assert bool((noisy[mask] > 0).all())


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(0, 14), st.integers(0, 14)).filter(
    lambda p: p[0] != p[1]), st.integers(1, 40), min_size=1, max_size=40),
    st.integers(0, 2**32), st.integers(1, 4))
def test_release_publishes_nothing_below_threshold(
    raw: dict[tuple[int, int], int], seed: int, min_c: int
) -> None:
    counts = {(IDS[a], IDS[b]): n for (a, b), n in raw.items()}
    sums = _sums(counts)
    s = ReleaseSettings(contributions=1, normalize="none", top_k=200, min_contributors=min_c,
                        threshold_sigmas=2.0)
    rel = build_release(sums, CATALOG, s, np.random.default_rng(seed))
    assert rel.threshold == pytest.approx(2.0 * s.sigma)
    for cid, lst in rel.neighbours.items():
        for other, v in lst:
            assert v >= rel.threshold
            a, b = _pair(cid, other)
            assert sums.pair(a, b)[1] >= min_c
    for cid, v in rel.popularity.items():
        assert v >= rel.threshold
        assert sums.title(title_key(cid))[1] >= min_c


def test_a_rare_pair_is_almost_never_published() -> None:
    sums = _sums({("t0", "t1"): 1})
    s = ReleaseSettings(contributions=1, min_contributors=1)
    published = sum(
        bool(build_release(sums, CATALOG, s, np.random.default_rng(seed)).neighbours)
        for seed in range(2000)
    )
    # P(N(1, σ) >= 3σ) with σ ≈ 9.4: about 0.2 %.
    assert published <= 15


def test_lists_are_top_k_row_normalized_and_unknown_keys_dropped() -> None:
    counts = {("t0", IDS[j]): 100 - j for j in range(1, 30)}
    counts[("t1", "t2")] = 5
    sums = _sums(counts)
    stranger = CoView(*_pair("t0", "not-in-catalog"), 1.0)
    for _ in range(10):
        sums.add(stranger)
    s = ReleaseSettings(noise=False, top_k=20)
    rel = build_release(sums, CATALOG, s, np.random.default_rng(0))
    t0 = rel.neighbours["t0"]
    assert [c for c, _ in t0] == IDS[1:21]
    assert sum(v for _, v in t0) == pytest.approx(1.0)
    assert rel.neighbours["t1"][0] == ("t0", pytest.approx(99 / 104))
    assert rel.stats["pairs_unknown_title"] == 1
    assert "not-in-catalog" not in rel.popularity
    assert rel.pairs_published == 30 and math.isinf(rel.epsilon)
    # t0 also counts the 10 reports that pair it with an unknown title.
    assert rel.popularity["t0"] == pytest.approx(sum(100 - j for j in range(1, 30)) + 10)


def test_min_contributors_withholds_single_reports_even_without_noise() -> None:
    rel = build_release(_sums({("t0", "t1"): 1, ("t2", "t3"): 2}), CATALOG,
                        ReleaseSettings(noise=False), np.random.default_rng(0))
    assert set(rel.neighbours) == {"t2", "t3"}


# -- trends -------------------------------------------------------------------------------------


def test_trends_rank_titles_growing_faster_than_their_baseline() -> None:
    win = RegionWindow()
    old = [CoView(*_pair("t0", "t1"), 1.0)] * 50
    for _ in range(4):
        win.add_batch(old)
        win.roll()
    win.add_batch(old)  # steady
    win.add_batch([CoView(*_pair("t2", "t3"), 1.0)] * 30)  # new
    rel = build_release(CoviewSums(), CATALOG, ReleaseSettings(noise=False),
                        np.random.default_rng(0), regions={"eu": win})
    names = [c for c, _ in rel.trends["eu"]]
    assert set(names[:2]) == {"t2", "t3"}
    assert "t0" not in names  # 50 a period, as before: no growth
