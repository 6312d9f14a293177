"""The TV's sync agent end to end: a real TV node (real brain and model) and a real
3-replica shard group, on 127.0.0.1.

- views become acknowledged pushes within a (shortened) interval; the queue empties;
  the shard's stored reports open only with the hub's private key; a release
  published into the shard reaches the TV's brain by pull;
- the shard group down for a while, then back: every queued report is delivered
  exactly once (reports built on the TV = real reports stored on every replica).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from omega.federation.report import HubKey, UnknownReportKey, UnopenableReport, open_report
from tests.integration.shard_harness import OfflineState, ShardCluster, cluster
from tests.integration.sync_harness import HUB, TvNode, real_reports
from tests.nodeproc import run_cli, wait_for

pytestmark = [pytest.mark.slow]

T0 = 1_700_000_000.0


def _synced(tv: TvNode, built_at_least: int) -> dict | None:  # type: ignore[type-arg]
    st = tv.status()
    if not st:
        return None
    s = st["sync"]
    ok = (s["reports_built"] >= built_at_least and s["queue"] == 0
          and s["reports_pushed"] == s["reports_built"])
    return st if ok else None


def _stored_once(c: ShardCluster, built: int) -> list[OfflineState]:
    """Stop the group; on every replica: ``built`` real reports, each stored once, and
    every push whole (8 reports: real ones, the rest dummies)."""
    c.stop()
    out = []
    for node in c.nodes:
        off = node.offline()
        real, dummy = real_reports(off.reports)
        assert real == built, (node.name, real, built)
        assert (real + dummy) % 8 == 0 and set(off.reports.values()) == {1}
        out.append(off)
    return out


def test_views_become_acked_pushes_and_a_release_reaches_the_brain(tmp_path: Path) -> None:
    with cluster(tmp_path, launcher="runner") as c:
        c.start()
        tv = TvNode(tmp_path, c.endpoints).start()
        try:
            wait_for(tv.status, 180, "tv up")
            tv.import_catalog(12)
            for i, cid in enumerate(["m1", "m2", "m3", "m4"]):
                tv.observe(cid, T0 + 600 * i)
            t0 = time.monotonic()
            st = wait_for(lambda: _synced(tv, 6), 30, "views pushed and acked")
            took = time.monotonic() - t0
            s = st["sync"]
            assert s["reports_built"] == 6  # window 3: every pair of the 4 views
            assert s["group"] == "g1" and s["hub_key_id"] == HUB.key_id
            assert s["epsilon_today"]["reports"] == 6
            print(f"views -> acked push in {took:.2f} s (interval 0.5 s)")
            shown = run_cli(["tv", "--control", tv.control, "status"])
            assert shown.returncode == 0, shown.stderr
            sync = json.loads(shown.stdout)["sync"]
            for key in ("last_push", "last_pull", "queue", "backoff", "global_version",
                        "hub_key_id", "epsilon_today", "group"):
                assert key in sync, key
            # A release into the shard reaches the brain by pull.
            leader = c.leader()
            assert leader is not None
            assert leader.ctl("global", timeout=10) is not None
            wait_for(lambda: (tv.status() or {}).get("crowd_version", 0) > 0, 30,
                     "release merged")
        finally:
            tv.stop()
            print(tv.tail())
        for off in _stored_once(c, 6):
            blob = next(iter(off.reports))
            with pytest.raises(UnknownReportKey):
                open_report({2: HubKey.generate(2)}, blob)
            with pytest.raises(UnopenableReport):  # another private key under the same id
                open_report({1: HubKey.generate(1)}, blob)


def test_group_down_then_back_delivers_every_queued_report_exactly_once(
        tmp_path: Path) -> None:
    with cluster(tmp_path, launcher="runner") as c:
        c.start()
        tv = TvNode(tmp_path, c.endpoints, daily_budget=1000).start()
        try:
            wait_for(tv.status, 180, "tv up")
            tv.import_catalog(20)
            tv.observe("m0", T0)
            tv.observe("m1", T0 + 60)
            wait_for(lambda: _synced(tv, 1), 30, "first push")
            c.stop()  # the whole group goes away
            # A day of viewing while the group is down (views an hour apart).
            for h in range(24):
                tv.observe(f"m{(h + 2) % 20}", T0 + 3600 * (h + 1))
            st = wait_for(lambda: (lambda s: s and s["sync"]["queue"] > 8 and
                                   s["sync"]["backoff"]["failures"] > 0 and s)(tv.status()),
                          30, "reports queued while the group is down")
            queued_while_down = st["sync"]["queue"]
            for node in c.nodes:
                node.spawn()
            c.wait_leader(60)
            st = wait_for(lambda: _synced(tv, queued_while_down), 120, "queue drained")
            built = st["sync"]["reports_built"]
        finally:
            tv.stop()
            print(tv.tail())
        _stored_once(c, built)
