"""The sync agent's plain parts: shard choice, schedule and backoff, budget and dummies,
the accountant's amplification bound and composition."""

from __future__ import annotations

import math
import random

import pytest

from omega.federation.report import REPORT_BYTES, HubKey, open_report
from omega.schema import SettingError, load
from omega.sync import accountant as acct
from omega.sync.contrib import Budget, choose, due_pairs, fill
from omega.sync.schedule import Backoff, Schedule
from omega.sync.settings import ShardGroup, SyncSettings
from omega.sync.shardmap import NoShardGroup, pick


def groups(n: int, region: str = "eu") -> list[ShardGroup]:
    return [ShardGroup(f"g{i}", region, (f"tcp://10.0.0.{i}:7410",)) for i in range(n)]


def test_rendezvous_adding_a_group_moves_about_one_in_n_plus_one() -> None:
    devices = [f"tv{i}" for i in range(4000)]
    before = {d: pick(groups(4), d, "eu").name for d in devices}
    after = {d: pick(groups(5), d, "eu").name for d in devices}
    moved = [d for d in devices if before[d] != after[d]]
    assert all(after[d] == "g4" for d in moved)  # only to the new group
    assert 0.15 < len(moved) / len(devices) < 0.25  # ~1/5


def test_rendezvous_a_vanished_group_moves_only_its_own_devices() -> None:
    devices = [f"tv{i}" for i in range(2000)]
    before = {d: pick(groups(4), d, "eu").name for d in devices}
    after = {d: pick(groups(4), d, "eu", exclude=("g2",)).name for d in devices}
    assert all(before[d] == after[d] for d in devices if before[d] != "g2")
    assert all(after[d] != "g2" for d in devices)


def test_rendezvous_stays_in_the_region_and_says_when_none_serves_it() -> None:
    gs = groups(2, "eu") + groups(2, "us")
    gs = [ShardGroup(f"{g.region}-{g.name}", g.region, g.endpoints) for g in gs]
    assert pick(gs, "tv1", "us").region == "us"
    with pytest.raises(NoShardGroup):
        pick(gs, "tv1", "asia")


def test_full_jitter_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(1.0, 8.0, random.Random(1))
    waits = [b.fail() for _ in range(6)]
    assert [b.ceiling()] == [8.0]
    assert all(0 <= w <= c for w, c in zip(waits, [1, 2, 4, 8, 8, 8], strict=True))
    b.reset()
    assert b.ceiling() == 0.0


def test_schedule_jitters_the_interval_and_honours_retry_after() -> None:
    s = Schedule(100.0, 0.1, 60.0, Backoff(1.0, 10.0, random.Random(2)), now=0.0,
                 rng=random.Random(3))
    assert 0 <= s.next_sync <= 50.0  # first sync within half an interval of boot
    s.synced(1000.0)
    assert 1090.0 <= s.next_sync <= 1110.0
    assert s.failed(2000.0, retry_after_s=30.0) >= 30.0
    assert s.sleep_for(2000.0) <= 60.0  # the heartbeat may come first


def test_settings_from_toml_tables_with_groups_and_bad_values_named() -> None:
    st = load(SyncSettings, {"device_id": "tv9", "region": "eu", "tier": "premium",
                             "groups": [{"name": "a", "region": "eu",
                                         "endpoints": ["tcp://1.2.3.4:1"]}]})
    assert st.interval == 60.0 and st.all_groups()[0].name == "a"
    with pytest.raises(SettingError, match="reports_per_push"):
        load(SyncSettings, {"reports_per_push": 9})
    with pytest.raises(SettingError, match="hub_public_key"):
        load(SyncSettings, {"hub_public_key": "abcd", "hub_key_id": 1})


def test_due_pairs_budget_and_choice() -> None:
    views = [("a", 1.0), ("b", 0.5), ("c", 1.0), ("d", 1.0)]
    assert due_pairs(views, 1, 2) == [("b", "d", 0.5), ("c", "d", 1.0)]
    assert due_pairs(views, 0, 2) == []
    b = Budget().spend(5, 3)
    assert b.room(5, 4) == 1 and b.room(6, 4) == 4
    assert choose([("a", "b", 1.0), ("a", "c", 1.0), ("b", "c", 1.0)], 2)[0] == ("a", "c", 1.0)


def test_fill_pads_with_dummies_to_a_constant_count_and_size() -> None:
    hub = HubKey.generate(3)
    from omega.federation.report import coview, seal

    real = [seal(coview("x", "y", 1.0), hub)]
    out = fill(real, 8, hub, random.Random(0))
    assert len(out) == 8 and {len(b) for b in out} == {REPORT_BYTES}
    kinds = [open_report({3: hub}, b).coview is None for b in out]
    assert kinds.count(True) == 7
    with pytest.raises(ValueError):
        fill(real * 9, 8, hub, random.Random(0))


def test_fmt21_bound_matches_its_formula_and_says_where_it_does_not_apply() -> None:
    eps0, n, delta = 1.0, 10_000, 1e-6
    e = math.exp(eps0)
    want = math.log1p((e - 1) / (e + 1) * (8 * math.sqrt(e * math.log(4 / delta)) / math.sqrt(n)
                                           + 8 * e / n))
    assert acct.fmt21_epsilon(eps0, n, delta) == pytest.approx(want)
    assert acct.fmt21_epsilon(eps0, n, delta) < eps0
    assert acct.fmt21_epsilon(17.0, 10, 1e-6) is None  # eps0 > log(n / (16 log(2/δ)))
    rp = acct.report_privacy(17.0, 10, 1e-6)
    assert rp.central == rp.local == 17.0 and not rp.amplified


def test_composition_over_days_with_dp_accounting() -> None:
    cost = acct.report_privacy(1.0, 10, 1e-6)  # not amplified at k = 10: pure ε = 1
    ledger: dict[int, acct.DayEntry] = {}
    for day in range(7):
        ledger = acct.add_reports(ledger, day, 3, cost)
    total = acct.compose(ledger.values(), 1e-5)
    assert 10.0 < total <= 21.0 + 1e-6  # never above the sum, below it when many compose
    assert acct.compose([], 1e-5) == 0.0
