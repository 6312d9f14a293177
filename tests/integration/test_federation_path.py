"""The federation path end to end, with real processes on 127.0.0.1.

One constellation for the module (hub ×3, aggregator, shards A and B ×3, each node
the real ``omega-node``) and one co-view round (a module fixture, which the
recommendation, file-scan and byte-capture tests read): its 200 TVs on shard A and
the TVs on shard B run the sync agent's cycle in this process (``SyncCore`` over
``DeviceLink``, provisioned by ``omega.sync.provision``; small brains with the hash
embedder, the TV that recommends with the real ONNX model); the kill -9 rounds push
sealed co-view reports with ``DeviceClient`` directly, so each test knows every
acknowledged report. The hub releases without noise and with no
thresholds (``[hub.release]``), so what a test pushes is what it can find in the
release; the DP maths is tested on its own (tests/unit/test_federation_*.py).

- co-views reported on shard A change a real brain's recommendations on shard B;
- content added at the hub reaches every TV;
- no node's files hold a (device, title) pair: shards hold no title, the
  aggregator neither devices nor titles, the hub no device;
- no stage receives one over the network: a recording relay (tests/tcptap.py) sits
  in front of every shard replica's device port (the replicas advertise it, so TVs
  reach the leader through it), the aggregator, every hub replica and its Pub/Sub
  port; the test decodes what each received and looks for every device and title
  the round's TVs used, in every form;
- kill -9 of the shard leader, the aggregator, the hub leader during a round: the
  next release counts every acknowledged report exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from federation_harness import (
    DEDUP_SECRET,
    REGION,
    AgentTv,
    Constellation,
    Pushed,
    ctl_target,
    hub_key,
    push_coviews,
    scan_files,
    sync_tvs,
    tv,
    wait_for,
)
from shard_harness import FLEET_KEY

from omega.errors import OmegaError
from omega.federation.report import REPORT_BYTES, HubKey, title_key
from omega.protocol import (
    BatchAck,
    ErrorReply,
    GlobalUpdate,
    Heartbeat,
    Pull,
    Push,
    RegionBatch,
    ShardBatch,
    UpdateRequest,
    decode,
    derive_device_key,
)
from tests.nodeproc import run_cli
from tests.tcptap import IN, OUT, Direction, Frame, TcpTap, found, frames_of

K = 5
#: Distinctive ids, so a byte scan cannot find them by accident.
GENRES = ["Western", "Space opera", "Cooking show", "Nature documentary", "Courtroom drama",
          "Sitcom", "Horror", "Cartoon"]
CATALOG = [{"id": f"ttl-{g.split()[0].lower()}-{j:02d}", "title": f"{g} story number {j}",
            "metadata": {"genres": [g], "description": f"A {g.lower()} with chapter {j}."}}
           for g in GENRES for j in range(3)]
ANCHOR, FAR = "ttl-western-00", "ttl-cooking-01"
#: The round's TVs, named so that every device id is a needle of 8 bytes or more.
ANCHOR_TVS, GENRE_TVS, IDLE_TVS = "tv-a-anchor-", "tv-a-genre-", "tv-b-idle-"
RECO, PROBE = "tv-b-recommends", "tv-a-keyprobe"


def _hub_cli(c: Constellation, args: list[str], *, idempotent: bool = False) -> Any:
    """``omega-node ctl ARGS`` on the hub leader. Hub leadership can flap on a loaded
    machine between finding the leader and asking it: a "not the leader" refusal did
    nothing, so the leader of the moment is asked until it answers, within a deadline
    (with ``idempotent``, after any failure: asking twice does what asking once does)."""
    def ask() -> Any:
        lead = c.wait_hub()
        out = run_cli(["ctl", "--control", lead.control, "--timeout", "120", *args],
                      timeout=180)
        if out.returncode == 0:
            return json.loads(out.stdout)
        if idempotent or "not the leader" in out.stderr:
            return None
        raise AssertionError(f"{lead.name}: ctl {' '.join(args)}: {out.stderr}")

    return wait_for(ask, 400, f"the hub leader to do {' '.join(args)}", interval=0.2)


def _add_catalog(c: Constellation) -> dict[str, Any]:
    """The catalog, embedded by the hub (adding the same titles again rewrites them)."""
    path = c.root / "catalog.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in CATALOG))
    got: dict[str, Any] = _hub_cli(c, ["content", "add", str(path)], idempotent=True)
    return got


@pytest.fixture(scope="module")
def const(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Constellation]:
    c = Constellation(tmp_path_factory.mktemp("fed"), k=K)
    try:
        c.start()
        # The hub embeds every title itself (no embedding given): the TV's ONNX model.
        assert _add_catalog(c) == {"added": len(CATALOG), "embedded": len(CATALOG)}
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
        wait_for(done, 30, f"shard {name} at release {version}", interval=0.1,
                 retry_on=(AssertionError, OmegaError))  # a leader change meanwhile


@dataclass
class CoviewRound:
    """The co-view round (shard A's TVs → the hub → the TV on shard B), what the
    test knows of it, and where each tap's capture of it begins."""

    before: list[Any]
    after: list[Any]
    release: dict[str, Any]
    key: HubKey
    plan: dict[str, list[str]]  # shard A's TVs and what each watched
    b_tvs: list[str]  # shard B's TVs (the one that recommends, then the idle ones)
    marks: dict[str, int]  # tap name -> its mark when the round began
    ends: dict[str, int]  # ... and when it ended
    seconds: float


@pytest.fixture(scope="module")
def coview_round(const: Constellation, tmp_path_factory: pytest.TempPathFactory
                 ) -> CoviewRound:
    """200 TVs on shard A and K on shard B, each running the sync agent's cycle
    (``SyncCore``: build → seal → push 8 reports, dummies filling → pull → merge)."""
    tmp = tmp_path_factory.mktemp("round")
    t0 = time.monotonic()
    marks = {t.name: t.mark() for t in const.taps()}
    catalog = [(i["id"], i["title"]) for i in CATALOG]
    key = hub_key(const.shards["a"].endpoints, PROBE)
    # Provisioned like factory TVs: the hub's key and the key that signs its rotations.
    verify = bytes.fromhex(const.hub_status()["verify_key"])
    now = time.time()
    reco = AgentTv.open(tmp, RECO, const.shards["b"].endpoints, "b", key, catalog,
                        verify_key=verify)
    try:
        reco.watch([ANCHOR], now - 600)
        before = reco.brain.recommend(k=5, timestamp=now)
        assert FAR not in [r.content_id for r in before]

        start = const.hub_status()["counters"]
        # 200 TVs on shard A: 10 watched the anchor then the far title; the others
        # watched two titles of one genre in a row. Each reports its pair through its
        # agent: randomized (keep 0.5, seeded per TV) and sealed to the hub's key.
        plan = {f"{ANCHOR_TVS}{i:03d}": [ANCHOR, FAR] for i in range(2 * K)}
        rng = random.Random(7)
        by_genre = [[i["id"] for i in CATALOG[g * 3:(g + 1) * 3]] for g in range(len(GENRES))]
        for n in range(190):
            plan[f"{GENRE_TVS}{n:03d}"] = sorted(rng.sample(rng.choice(by_genre[1:]), 2))
        out = sync_tvs(tmp / "fleet", const.shards["a"].endpoints, "a", key, catalog,
                       plan, now - 3600, verify_key=verify)
        assert len(out) == 200 and not [o for o in out.values() if o.error], \
            {n: o.error for n, o in out.items() if o.error}
        assert sum(o.built for o in out.values()) == 200
        assert sum(o.pushed for o in out.values()) == 200  # real reports acknowledged
        # Every push carries 8 reports (the real one and sealed dummies).
        st = const.flush(start["reports"] + 200 * 8)
        assert st["counters"]["opened"] - start["opened"] == 200
        assert st["counters"]["dummies"] - start["dummies"] == 200 * 7
        rel = const.hub_release()
        assert rel["released"] and rel["spent"] and rel["pairs_published"] >= 1
        _released_everywhere(const, rel["version"])

        # The TV on shard B learns the release through its agent's sync (its push: 8 dummies).
        got = reco.core.sync()
        assert not got.error and got.pulls >= 1 and got.built == 0, got
        status = reco.core.status()
        assert status["global_version"] == got.version > 0
        assert status["hub_key_id"] == key.key_id
        assert status["reports_pushed"] == 0 and status["queue"] == 0  # it watched one title
        # Its dummies wait in shard B's open bucket for K TVs: K - 1 more TVs that watched
        # nothing sync there too, so the bucket leaves and no report stays behind.
        base = const.hub_status()["counters"]
        idle = [f"{IDLE_TVS}{i}" for i in range(K - 1)]
        pad = sync_tvs(tmp / "pad", const.shards["b"].endpoints, "b", key, catalog,
                       {name: [] for name in idle}, now, verify_key=verify)
        assert not [o for o in pad.values() if o.error or o.built or o.pushed]
        st = const.flush(base["reports"] + K * 8)
        assert st["counters"]["reports"] == base["reports"] + K * 8
        assert st["counters"]["dummies"] == base["dummies"] + K * 8
        # The hub folds them into a release (they add nothing) and holds no batch.
        drained = const.hub_release()
        assert drained["released"] and const.hub_status()["pending_batches"] == 0
        _released_everywhere(const, drained["version"])
        after = reco.brain.recommend(k=5, timestamp=now)
    finally:
        reco.close()
    ends = {t.name: t.mark() for t in const.taps()}
    return CoviewRound(before, after, rel, key, plan, [RECO, *idle], marks, ends,
                       time.monotonic() - t0)


def test_coviews_on_shard_a_change_recommendations_on_shard_b(
        coview_round: CoviewRound) -> None:
    before, after = coview_round.before, coview_round.after
    assert FAR not in [r.content_id for r in before]
    top = [r.content_id for r in after]
    assert FAR in top[:3], after
    far = next(r for r in after if r.content_id == FAR)
    assert far.source == "crowd", far
    print("before:", [(r.content_id, r.reason) for r in before])
    print("after:", [(r.content_id, r.reason) for r in after])
    print("release:", coview_round.release)
    print(f"round: {coview_round.seconds:.1f} s")


def test_content_added_at_the_hub_reaches_every_tv(const: Constellation) -> None:
    new = [{"id": "ttl-fresh-arrival", "title": "A fresh arrival", "embedding": [0.01] * 384},
           {"id": "ttl-fresh-second", "title": "Second fresh title",
            "metadata": {"genres": ["Sitcom"]}}]
    path = const.root / "new.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in new))
    assert const.hub_ctl("content", str(path), idempotent=True) == {"added": 2, "embedded": 1}
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


@dataclass(frozen=True)
class Needles:
    """Every form in which the round's devices and titles could travel or be kept."""

    device_ids: list[bytes]  # as TVs name themselves in requests
    device_hashes: list[bytes]  # the shard's keyed hash (dedup secret)
    device_keys: list[bytes]  # each TV's MAC key: never sent by anyone
    title_ids: list[bytes]
    title_names: list[bytes]
    title_keys: list[bytes]  # as in the sealed plaintext (u64 big-endian), and little-endian

    @property
    def devices(self) -> list[bytes]:
        return self.device_ids + self.device_hashes + self.device_keys

    @property
    def titles(self) -> list[bytes]:
        return self.title_ids + self.title_names + self.title_keys


def _needles(r: CoviewRound) -> Needles:
    names = [*r.plan, *r.b_tvs, PROBE]
    titles = [i["id"] for i in CATALOG]
    n = Needles(
        [d.encode() for d in names], [_dhash(d) for d in names],
        [derive_device_key(FLEET_KEY, d) for d in names],
        [t.encode() for t in titles], [i["title"].encode() for i in CATALOG],
        [title_key(t).to_bytes(8, order) for t in titles for order in ("big", "little")])
    # Short needles turn up in megabytes of ciphertext by chance (a 4-byte one did once,
    # in test_sync_privacy_wire): every needle here is 8 bytes or more.
    assert min(map(len, n.devices + n.titles)) >= 8
    return n


def test_no_node_keeps_a_device_title_pair_in_its_files(
        const: Constellation, coview_round: CoviewRound) -> None:
    """A TV's report names its titles by 64-bit key: the shard's files (LMDB, Raft
    journal, logs) hold device hashes and the public release it serves (title ids),
    but no title key; the aggregator's hold no device and no title in any form; the
    hub's hold titles but no device, not even a keyed hash."""
    n = _needles(coview_round)
    shard_files = scan_files(const.shards["a"].nodes[0].data_dir.parent)
    agg_files = scan_files(const.aggregator.data_dir) + const.aggregator.log_path.read_bytes()
    hub_files = b"".join(scan_files(h.data_dir) + h.log_path.read_bytes() for h in const.hubs)
    assert len(shard_files) > 0 and len(agg_files) > 0 and len(hub_files) > 0
    # The shards know (keyed hashes of) devices, but no reported title.
    assert found(n.device_hashes, [shard_files])
    assert not found(n.title_keys, [shard_files])
    # The aggregator knows neither.
    assert not found(n.titles, [agg_files])
    assert not found(n.devices, [agg_files])
    # The hub knows titles (it opens reports) but no device.
    assert found(n.title_ids, [hub_files])
    assert not found(n.devices, [hub_files])


def _decoded(frames: Iterable[Frame]) -> list[Any]:
    return [decode(f.body) for f in frames]


def _reports(msgs: Iterable[Any], cls: type) -> list[bytes]:
    return [r for m in msgs if isinstance(m, cls) for r in m.reports]


def _peers(tap: TcpTap) -> dict[int, str]:
    """Who is on each connection to a hub replica, by what it asked first."""
    out: dict[int, str] = {}
    for f in tap.frames(IN):
        msg = decode(f.body)
        kind = {RegionBatch: "aggregator", UpdateRequest: "shard"}.get(type(msg))
        if kind is not None:
            out.setdefault(f.conn, kind)
    return out


def test_no_stage_receives_a_device_title_pair_on_the_wire(
        const: Constellation, coview_round: CoviewRound) -> None:
    """The byte capture: every port that carries device or federation traffic is
    reached through a recording relay (tests/tcptap.py) — each shard replica's device
    port (the TVs dial the relays, which the replicas advertise), the aggregator's
    port, each hub replica's port and its Pub/Sub port. What each stage RECEIVED from
    the constellation's start (the co-view round, and any test that ran before this
    one), searched for every device and title of the round in every form:

    - the shards: device ids (TVs sign requests with them) but no title in any form —
      the reports are sealed, and a pull names no title; from the hub only the public
      release (titles) and no device;
    - the aggregator: no device and no title in any form;
    - the hub: no device in any form, and no title outside the sealed reports it opens.

    The hub's Raft traffic between its replicas, and the shards', is not relayed: it
    carries only what the leader received here (the Raft journals are in the file scan).
    """
    r = coview_round
    n = _needles(r)
    marks, ends = r.marks, r.ends
    taps = const.taps()
    assert not [t.name for t in taps if t.overflowed]
    devices_a, devices_b = const.device_taps["a"], const.device_taps["b"]
    shard_in = [b for t in devices_a + devices_b for b in t.received()]
    agg_in = const.agg_tap.received()
    hub_in = [b for t in const.hub_taps + const.pub_taps for b in t.received()]
    # What the hub replicas answered, split by who asked: the aggregator (acks) and
    # the shards (catch-up: the release, as over Pub/Sub).
    peers = {t.name: _peers(t) for t in const.hub_taps}
    to_agg: list[bytes] = []
    to_shards = [b for t in const.pub_taps for b in t.sent()]
    for t in const.hub_taps:
        for conn, data in t.streams(OUT).items():
            (to_agg if peers[t.name].get(conn) == "aggregator" else to_shards).append(data)
    agg_from_hub = [f for t in const.hub_taps for f in t.frames(OUT)
                    if peers[t.name].get(f.conn) == "aggregator"]

    # -- the capture saw the round (so the checks below can fail for the right reason)
    pushes_a = [m for m in _decoded(frames_of(devices_a, IN, marks, ends))
                if isinstance(m, Push)]
    assert {p.device_id for p in pushes_a} >= set(r.plan)  # every TV of shard A pushed
    assert all(len(p.reports) == 8 for p in pushes_a)
    pushed = {rep for p in pushes_a for rep in p.reports}
    assert len(pushed) >= 200 * 8 and {len(x) for x in pushed} == {REPORT_BYTES}
    at_agg = set(_reports(_decoded(frames_of([const.agg_tap], IN, marks, ends)), ShardBatch))
    at_hub = set(_reports(_decoded(frames_of(const.hub_taps, IN, marks, ends)), RegionBatch))
    # Sealed reports travel as the TVs made them: every one pushed on shard A in the
    # round crossed the aggregator's port and a hub replica's port.
    assert pushed <= at_agg and pushed <= at_hub, (len(pushed - at_agg), len(pushed - at_hub))
    assert {len(x) for x in at_agg | at_hub} == {REPORT_BYTES}
    releases = [m for m in _decoded(frames_of(const.pub_taps, OUT, marks, ends))
                if isinstance(m, GlobalUpdate)]
    assert r.release["version"] in {m.version for m in releases}
    # Acks, and a follower's "not the leader" (with the leader's address).
    assert BatchAck in {type(m) for m in _decoded(agg_from_hub)} <= {BatchAck, ErrorReply}
    assert found([ANCHOR.encode(), FAR.encode()], to_shards)  # the release, in clear

    # -- the shards: devices, no title (what TVs send; Push/Pull/Heartbeat only)
    from_tvs = _decoded(frames_of(devices_a + devices_b, IN))
    assert {type(m) for m in from_tvs} <= {Push, Pull, Heartbeat}
    assert all(m.want == () for m in from_tvs if isinstance(m, Pull))  # asks for no title
    assert set(found(n.device_ids, shard_in)) == set(n.device_ids)
    assert not found(n.titles, shard_in)
    assert not found(n.device_keys, shard_in)
    assert not found(n.devices, to_shards)
    # -- the aggregator: neither
    assert not found(n.devices + n.titles, agg_in + to_agg)
    # -- the hub: no device; titles only inside the reports it opens
    assert not found(n.devices, hub_in)
    assert not found(n.titles, hub_in)
    assert {m.region for m in _decoded(frames_of(const.hub_taps, IN))
            if isinstance(m, RegionBatch)} == {REGION}

    # What each stage received: in the round (between its marks), and in all.
    stages: dict[str, list[tuple[TcpTap, Direction, set[str]]]] = {
        "shards from TVs": [(t, IN, set()) for t in devices_a + devices_b],
        "shards from hub": [*((t, OUT, set()) for t in const.pub_taps),
                            *((t, OUT, {"shard"}) for t in const.hub_taps)],
        "aggregator": [(const.agg_tap, IN, set()),
                       *((t, OUT, {"aggregator"}) for t in const.hub_taps)],
        "hub": [(t, IN, set()) for t in const.hub_taps + const.pub_taps],
    }
    for stage, sources in stages.items():
        seen = {"round": [0, 0], "total": [0, 0]}
        for t, way, who in sources:
            def mine(conn: int, t: TcpTap = t, who: set[str] = who) -> bool:
                return not who or peers[t.name].get(conn, "shard") in who
            for what, since, until in (("round", marks[t.name], ends[t.name]),
                                       ("total", 0, None)):
                seen[what][0] += sum(len(b) for c, b in t.streams(way, since, until).items()
                                     if mine(c))
                seen[what][1] += sum(1 for f in t.frames(way, since, until) if mine(f.conn))
        print(f"{stage}: {seen['round'][0]:,} bytes in {seen['round'][1]:,} frames in the "
              f"round ({seen['total'][0]:,} bytes, {seen['total'][1]:,} frames in all)")
    print(f"round: {len(pushes_a)} pushes on shard A (with redirects), {len(pushed)} reports, "
          f"{len(at_agg)} at the aggregator, {len(at_hub)} at the hub, "
          f"{len(releases)} release frames over Pub/Sub")


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
    # With the key's id, asking again after a lost answer (the leader moved while the
    # rotation was committing) cannot rotate twice.
    new_id = _hub_cli(const, ["federation", "rotate-key", "--key-id", str(old.key_id + 1)],
                      idempotent=True)["key_id"]
    assert new_id == old.key_id + 1
    again = _hub_cli(const, ["federation", "rotate-key", "--key-id", str(new_id)],
                     idempotent=True)
    assert again["key_id"] == new_id
    assert const.hub_status()["current_key"] == new_id

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


def test_a_shard_group_down_during_releases_gets_their_titles_back(
        const: Constellation) -> None:
    """Releases broadcast only the titles changed since the one before: shard group B,
    killed (-9, every replica) while a title is released and back before the next one,
    still ends with both titles, by catch-up (whichever comes first, the catch-up or
    the next broadcast: the rule that a release of changes completes only on top of
    every release before it is tested on the state machine, test_federation_inprocess
    and test_shard_state)."""
    group = const.shards["b"]

    def content(path_name: str, cid: str) -> int:
        path = const.root / path_name
        path.write_text(json.dumps({"id": cid, "title": cid.replace("-", " "),
                                    "embedding": [0.02] * 384}) + "\n")
        assert const.hub_ctl("content", str(path), idempotent=True)["added"] == 1
        rel = const.hub_release()  # may also sum reports other tests left in flight
        assert rel["released"]
        return int(rel["version"])

    for node in group.nodes:
        node.kill()
    missed = content("missed.jsonl", "ttl-missed-while-down")
    for node in group.nodes:
        node.spawn()
    group.wait_leader(60)
    last = content("after.jsonl", "ttl-released-after")
    assert last == missed + 1
    _released_everywhere(const, last)
    for g in ("a", "b"):
        with tv(const.shards[g].endpoints, f"tv-back-{g}") as dev:
            got: set[str] = set()
            version = 0
            for _ in range(200):  # the delta comes in bounded pieces
                r = dev.pull(version, "eu")
                got.update(c.id for c in r.new_content)
                if r.global_version == version:
                    break
                version = r.global_version
            assert {"ttl-missed-while-down", "ttl-released-after"} <= got, (g, sorted(got))
