"""Pull responses from stored global records; shard settings validation."""

from __future__ import annotations

import pytest

from omega.protocol import EMBEDDING_BYTES, GlobalUpdate, NewContent, encode
from omega.schema import SettingError, load
from omega.shard.commands import pack
from omega.shard.pulls import build_pull, records_of
from omega.shard.settings import ShardSettings
from omega.shard.state import KIND_CONTENT, KIND_NEIGHBOURS, KIND_POPULARITY, KIND_TRENDS, Change


def nb(title: str, cursor: int, n: int = 3) -> Change:
    return Change(KIND_NEIGHBOURS, title.encode(), cursor,
                  pack([[f"{title}-n{i}", 1.0 / (i + 1)] for i in range(n)]))


def test_records_round_trip_through_a_pull() -> None:
    emb = b"\x01" * EMBEDDING_BYTES
    update = GlobalUpdate(3, neighbours=(("a", (("b", 0.5),)),), popularity=(("a", 2.0),),
                          trends=(("eu", (("a", 1.5),)),),
                          new_content=(NewContent("c", "C", emb),))
    changes = [Change(k, key, i + 1, v) for i, (k, key, v) in enumerate(records_of(update))]
    plan = build_pull(changes, current=4, region="eu", wanted=[], max_records=100,
                      max_bytes=10_000)
    r = plan.response
    assert plan.complete and r.global_version == 4
    assert (r.neighbours, r.popularity, r.trends) == (update.neighbours, update.popularity,
                                                      (("a", 1.5),))
    assert r.new_content == update.new_content


def test_budget_cuts_at_a_record_and_the_cursor_says_where() -> None:
    changes = [nb(f"t{i}", i + 1) for i in range(10)]
    size = len(changes[0].key) + len(changes[0].value) + 8
    plan = build_pull(changes, current=10, region="eu", wanted=[], max_records=100,
                      max_bytes=3 * size)
    assert not plan.complete and plan.records == 3
    assert plan.response.global_version == 3
    assert [t for t, _ in plan.response.neighbours] == ["t0", "t1", "t2"]
    # One record always goes, even if alone it is over the budget.
    one = build_pull(changes, current=10, region="eu", wanted=[], max_records=100, max_bytes=1)
    assert one.records == 1 and one.response.global_version == 1
    assert len(encode(one.response)) < 64 * 1024


def test_other_regions_are_skipped_but_passed_and_removals_carried() -> None:
    changes = [Change(KIND_TRENDS, b"us", 1, pack([["x", 1.0]])),
               Change(KIND_NEIGHBOURS, b"gone", 2, b""),
               Change(KIND_POPULARITY, b"p", 3, pack(4.0)),
               Change(KIND_CONTENT, b"old", 4, b"")]
    plan = build_pull(changes, current=4, region="eu", wanted=[], max_records=10,
                      max_bytes=10_000)
    r = plan.response
    assert r.trends == () and r.neighbours == (("gone", ()),) and r.popularity == (("p", 4.0),)
    assert r.new_content == () and r.global_version == 4


@pytest.mark.parametrize(("table", "key"), [
    ({"rate_limit_interval_s": -1}, "rate_limit_interval_s"),
    ({"max_reports": 65}, "max_reports"),
    ({"group_commit_max_batch": 0}, "group_commit_max_batch"),
    ({"advertise": "http://x"}, "advertise"),
    ({"peer_addresses": ["nope"]}, "peer_addresses[0]"),
    ({"registration": "closed"}, "registration"),
    ({"k_anonymity": 0}, "k_anonymity"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_settings_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(SettingError) as exc:
        load(ShardSettings, table)
    assert exc.value.key == key


def test_settings_defaults_and_peer_map() -> None:
    s = load(ShardSettings, {"peer_addresses": ["10.0.0.2:7420=tcp://10.0.0.2:7410"]})
    assert s.peer_map() == {"10.0.0.2:7420": "tcp://10.0.0.2:7410"}
    assert s.rate_limit_interval_s == 60.0 and s.registration == "open"
