"""The federation path end to end, with real processes on 127.0.0.1.

One constellation for the module (hub ×3, aggregator, shards A and B ×3, each node
the real ``omega-node``); simulated TVs push sealed co-view reports with
``DeviceClient`` and pull releases. The hub releases without noise and with no
thresholds (``[hub.release]``), so what a test pushes is what it can find in the
release; the DP maths is tested on its own (tests/unit/test_federation_*.py).

- co-views reported on shard A change a real brain's recommendations on shard B;
- content added at the hub reaches every TV;
- no node's files hold a (device, title) pair: shards hold no title, the
  aggregator neither devices nor titles, the hub no device;
- kill -9 of the shard leader, the aggregator, the hub leader during a round: the
  next release counts every acknowledged report exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from federation_harness import (
    DEDUP_SECRET,
    Constellation,
    Pushed,
    ctl_target,
    hub_key,
    pull_all,
    push_coviews,
    scan_files,
    tv,
    wait_for,
)

from omega.federation.report import HubKey, title_key
from tests.nodeproc import run_cli

K = 5
#: Distinctive ids, so a byte scan cannot find them by accident.
GENRES = ["Western", "Space opera", "Cooking show", "Nature documentary", "Courtroom drama",
          "Sitcom", "Horror", "Cartoon"]
CATALOG = [{"id": f"ttl-{g.split()[0].lower()}-{j:02d}", "title": f"{g} story number {j}",
            "metadata": {"genres": [g], "description": f"A {g.lower()} with chapter {j}."}}
           for g in GENRES for j in range(3)]
ANCHOR, FAR = "ttl-western-00", "ttl-cooking-01"


@pytest.fixture(scope="module")
def const(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Constellation]:
    c = Constellation(tmp_path_factory.mktemp("fed"), k=K)
    try:
        c.start()
        # The hub embeds every title itself (no embedding given): the TV's ONNX model.
        path = c.root / "catalog.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in CATALOG))
        lead = c.wait_hub()
        out = run_cli(["ctl", "--control", lead.control, "--timeout", "120", "content", "add",
                       str(path)], timeout=180)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"added": len(CATALOG), "embedded": len(CATALOG)}
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()


def _devices(prefix: str, n: int, pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    return {f"{prefix}{i:03d}": list(pairs) for i in range(n)}


def _released_everywhere(c: Constellation, version: int) -> None:
    """Both shards hold release ``version`` completely (broadcast or catch-up)."""
    for name, group in c.shards.items():
        def done(group: Any = group) -> bool:
            st = ctl_target(group.wait_leader().control, "federation", "status")
            return bool((st.get("release_complete") or 0) >= version)
        wait_for(done, 30, f"shard {name} at release {version}", interval=0.1)


def test_coviews_on_shard_a_change_recommendations_on_shard_b(
        const: Constellation, tmp_path: Path) -> None:
    from omega.brain.api import Brain, ViewingEvent
    from omega.brain.content import Content

    brain = Brain.open(tmp_path / "tv-b")
    try:
        brain.add_content([Content(i["id"], i["title"], tuple(i["metadata"]["genres"]),
                                   i["metadata"]["description"]) for i in CATALOG])
        brain.observe(ViewingEvent(ANCHOR, 1.0, 1_800_000_000.0))
        before = brain.recommend(k=5, timestamp=1_800_000_100.0)
        assert FAR not in [r.content_id for r in before]

        key = hub_key(const.shards["a"].endpoints)
        start = const.hub_status()["counters"]["reports"]
        # 200 TVs on shard A: 10 watched the anchor then the far title; the others
        # watched titles of one genre in a row (their own pairs).
        plan = _devices("tva", 2 * K, [(ANCHOR, FAR)])
        rng = random.Random(7)
        by_genre = [[i["id"] for i in CATALOG[g * 3:(g + 1) * 3]] for g in range(len(GENRES))]
        for n in range(190):
            a, b = sorted(rng.sample(rng.choice(by_genre[1:]), 2))
            plan[f"tvx{n:03d}"] = [(a, b)]
        pushed = push_coviews(const.shards["a"].endpoints, key, plan)
        assert pushed.reports == 200
        const.flush(start + pushed.reports)
        rel = const.hub_release()
        assert rel["released"] and rel["spent"] and rel["pairs_published"] >= 1
        _released_everywhere(const, rel["version"])

        with tv(const.shards["b"].endpoints, "tvb-reco") as dev:
            version, delta = pull_all(dev)
        nb = dict(delta.neighbours)
        assert FAR in dict(nb[ANCHOR])
        assert ANCHOR in {t for t, _ in delta.trends}  # the region's trends came too
        brain.apply_crowd({t: list(n) for t, n in delta.neighbours}, dict(delta.popularity),
                          list(delta.trends), version)
        after = brain.recommend(k=5, timestamp=1_800_000_100.0)
        top = [r.content_id for r in after]
        assert FAR in top[:3], after
        far = next(r for r in after if r.content_id == FAR)
        assert far.source == "crowd", far
        print("before:", [(r.content_id, r.reason) for r in before])
        print("after:", [(r.content_id, r.reason) for r in after])
        print("release:", rel)
    finally:
        brain.close()


def test_content_added_at_the_hub_reaches_every_tv(const: Constellation) -> None:
    new = [{"id": "ttl-fresh-arrival", "title": "A fresh arrival", "embedding": [0.01] * 384},
           {"id": "ttl-fresh-second", "title": "Second fresh title",
            "metadata": {"genres": ["Sitcom"]}}]
    lead = const.wait_hub()
    path = const.root / "new.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in new))
    assert ctl_target(lead.control, "content", str(path), timeout=120) == {"added": 2,
                                                                          "embedded": 1}
    rel = const.hub_release()
    assert rel["released"] and not rel["spent"]  # titles alone spend no privacy budget
    _released_everywhere(const, rel["version"])
    tvs = [(g, f"tv-content-{g}-{i}") for g in ("a", "b") for i in range(10)]
    for group, name in tvs:
        with tv(const.shards[group].endpoints, name) as dev:
            got: dict[str, bytes] = {}
            version = 0
            for _ in range(100):  # the delta comes in bounded pieces
                r = dev.pull(version, "eu")
                got.update({c.id: c.embedding for c in r.new_content})
                if r.global_version == version:
                    break
                version = r.global_version
            assert {"ttl-fresh-arrival", "ttl-fresh-second"} <= set(got), (name, sorted(got))
            assert all(len(got[i["id"]]) == 768 for i in new)  # float16 × 384


def _dhash(device: str) -> bytes:
    return hmac.new(DEDUP_SECRET, device.encode(), hashlib.sha256).digest()


def test_no_node_holds_or_receives_a_device_title_pair(const: Constellation) -> None:
    """A TV's report names its titles by 64-bit key: the shard's files (LMDB, Raft
    journal, logs) hold device hashes and the public release it serves (title ids),
    but no title key; the aggregator's hold no device and no title in any form; the
    hub's hold titles but no device, not even a keyed hash."""
    devices = [f"tva{i:03d}" for i in range(2 * K)]
    titles = [i["id"] for i in CATALOG]
    keys = [title_key(t).to_bytes(8, "big") for t in titles]
    title_bytes = [t.encode() for t in titles] + keys
    device_bytes = [d.encode() for d in devices] + [_dhash(d) for d in devices]
    shard_files = scan_files(const.shards["a"].nodes[0].data_dir.parent)
    agg_files = scan_files(const.aggregator.data_dir) + const.aggregator.log_path.read_bytes()
    hub_files = b"".join(scan_files(h.data_dir) + h.log_path.read_bytes() for h in const.hubs)
    assert len(shard_files) > 0 and len(agg_files) > 0 and len(hub_files) > 0
    # The shards know (keyed hashes of) devices, but no reported title.
    assert any(d in shard_files for d in device_bytes[len(devices):])
    assert not [t for t in keys if t in shard_files]
    # The aggregator knows neither.
    assert not [t for t in title_bytes if t in agg_files]
    assert not [d for d in device_bytes if d in agg_files]
    # The hub knows titles (it opens reports) but no device.
    assert any(t in hub_files for t in title_bytes)
    assert not [d for d in device_bytes if d in hub_files]
    # On the wire: what the aggregator received (from the shards) and what the hub
    # received (from the aggregator, and the shards' catch-up requests), captured by
    # relays in front of them: sealed reports only, no device, no title.
    to_agg = const.agg_capture.captured()
    to_hub = b"".join(p.captured() for p in const.hub_captures)
    assert len(to_agg) > 2 * K * 73 and len(to_hub) > 2 * K * 73  # the reports went through
    for wire in (to_agg, to_hub):
        assert not [d for d in device_bytes if d in wire]
        assert not [t for t in title_bytes if t in wire]


def _round(const: Constellation, prefix: str, kill: Any) -> None:
    """Push a round on both shards while ``kill()`` SIGKILLs a stage; restart it;
    the next release counts exactly the acknowledged reports."""
    start = const.hub_status()["counters"]
    key: HubKey = hub_key(const.shards["a"].endpoints, f"{prefix}-probe")
    results: dict[str, Pushed] = {}

    def pusher(group: str) -> None:
        plan = _devices(f"{prefix}{group}", 3 * K, [(ANCHOR, "ttl-horror-02")])
        results[group] = push_coviews(const.shards[group].endpoints, key, plan, threads=4)

    threads = [threading.Thread(target=pusher, args=(g,), daemon=True) for g in ("a", "b")]
    for t in threads:
        t.start()
    kill()
    for t in threads:
        t.join(240)
    acked = sum(r.reports for r in results.values())
    assert acked == 2 * 3 * K, {g: (r.reports, r.failed) for g, r in results.items()}
    st = const.flush(start["reports"] + acked, timeout=120)
    assert st["counters"]["reports"] == start["reports"] + acked  # none lost, none doubled
    rel = const.hub_release()
    assert rel["released"] and rel["spent"]
    body = const.hub_status()["last_release"]
    assert body["reports"] == start["opened"] + acked, (body, start)


def test_kill_9_shard_leader_during_a_round(const: Constellation) -> None:
    group = const.shards["a"]

    def stored() -> int:
        st = group.wait_leader().ctl("shard")
        return int(st["state"]["reports_total"]) if st else -1

    base = stored()

    def kill() -> None:
        # Once the round's first reports are stored (a counter: it cannot be missed).
        wait_for(lambda: stored() > base or None, 60, "the round's reports stored", interval=0.02)
        lead = group.wait_leader()
        lead.kill()
        group.wait_leader(among=[n for n in group.nodes if n is not lead])
        lead.spawn()

    _round(const, "k9s", kill)


def test_kill_9_aggregator_during_a_round(const: Constellation) -> None:
    agg = const.aggregator

    def received() -> int:
        return int((agg.ctl("federation") or {}).get("received_reports_total") or 0)

    base = received()

    def kill() -> None:
        wait_for(lambda: received() > base or None, 60, "the round at the aggregator",
                 interval=0.02)
        agg.kill()
        agg.spawn()

    _round(const, "k9a", kill)


def test_kill_9_hub_leader_during_a_round(const: Constellation) -> None:
    def kill() -> None:
        base = const.hub_status()["counters"]["batches"]
        wait_for(lambda: const.hub_status()["counters"]["batches"] > base or None, 60,
                 "a batch at the hub", interval=0.05)
        lead = const.wait_hub()
        lead.kill()
        wait_for(lambda: (h := const.hub_leader()) is not None and h is not lead and h, 30,
                 "a new hub leader")
        lead.spawn()

    _round(const, "k9h", kill)


def test_rotate_key_tvs_learn_it_and_old_reports_still_open(const: Constellation) -> None:
    old = hub_key(const.shards["b"].endpoints, "rot-probe-1")
    lead = const.wait_hub()
    out = run_cli(["ctl", "--control", lead.control, "federation", "rotate-key"])
    assert out.returncode == 0, out.stderr
    new_id = json.loads(out.stdout)["key_id"]
    assert new_id == old.key_id + 1

    def learned() -> HubKey | None:
        k = hub_key(const.shards["b"].endpoints, "rot-probe-2")
        return k if k.key_id == new_id else None

    new = wait_for(learned, 30, "TVs learn the new key", interval=0.2)
    start = const.hub_status()["counters"]
    # A TV that has not pulled since still seals to the old key: opened in the grace period.
    a = push_coviews(const.shards["b"].endpoints, old, _devices("rot-old", K, [(ANCHOR, FAR)]))
    b = push_coviews(const.shards["b"].endpoints, new, _devices("rot-new", K, [(ANCHOR, FAR)]))
    st = const.flush(start["reports"] + a.reports + b.reports)
    assert st["counters"]["opened"] == start["opened"] + a.reports + b.reports
    assert st["counters"]["dropped"] == start["dropped"]
