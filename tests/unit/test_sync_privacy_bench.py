"""``omega-node bench privacy`` on a small synthetic population: the row shape the
table shares with the federation's third adversary, the shard learning nothing
from traffic, and randomization silencing the hub."""

from __future__ import annotations

import random

from omega.sim.privacy import PrivacySetting, Row, run_rows, table

KEYS = {"adversary", "setting", "default", "top1", "top10", "chance_top1", "chance_top10",
        "epsilon_per_day"}


def population(n: int = 60, titles: int = 80) -> tuple[list[list[tuple[str, float]]], list[str]]:
    rng = random.Random(5)
    catalog = [f"t{i}" for i in range(titles)]
    # Two tastes: a TV watches mostly from its half of the catalog.
    users = []
    for u in range(n):
        half = catalog[: titles // 2] if u % 2 else catalog[titles // 2:]
        users.append([(rng.choice(half), 1.0) for _ in range(rng.randint(6, 30))])
    return users, catalog


def test_rows_have_the_shared_shape_and_the_shard_sees_nothing() -> None:
    users, catalog = population()
    settings = [PrivacySetting(0.5, 8, 10, default=True), PrivacySetting(0.0, 8, 10)]
    extra = [Row("lists", s.name, s.default, 0.1, 0.2, 0.1, 0.2, 1.0) for s in settings]
    rows = run_rows(users, catalog, settings, days=2, seed=1, show_progress=False,
                    extra_rows=lambda s: [r for r in extra if r.setting == s.name])
    assert {r.adversary for r in rows} == {"shard", "hub", "hub-link", "lists"}
    for r in rows:
        assert set(r.as_dict()) == KEYS
        assert 0 <= r.top1 <= r.top10 <= 1 and 0 <= r.chance_top1 <= r.chance_top10 <= 1
    shard = [r for r in rows if r.adversary == "shard"]
    assert all(r.top1 == r.chance_top1 and r.top10 == r.chance_top10 for r in shard)
    # keep = 0: every report is a random pair; the hub's guess from them is no better
    # than without the target's reports (allowing small-sample noise).
    silent = next(r for r in rows if r.adversary == "hub" and r.setting.startswith("keep=0 "))
    assert silent.top10 <= silent.chance_top10 + 0.1
    assert "shard" in table(rows)
