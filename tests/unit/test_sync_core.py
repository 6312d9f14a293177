"""SyncCore against the real shard service in process and a real brain (fast embedder).

Views become sealed reports in the brain's queue, pushes of a constant size acked
by the shard, the queue emptied only by the shard's ack; a retried or resumed push
reuses its sequence number; a pull merges crowd lists and new content; every kind
of hostile pull is refused with its type and leaves the brain's LMDB unchanged.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from omega.brain.api import Brain, ViewingEvent
from omega.federation.keysign import HubSigner
from omega.federation.report import REPORT_BYTES, HubKey
from omega.protocol import EMBEDDING_BYTES, GlobalUpdate, NewContent, PullResp
from omega.protocol.vectors import embedding_to_wire
from omega.raft import LeaderChanged
from omega.shard import ShardService, state
from omega.sync import errors as E
from omega.sync.core import K_CONTRIB, K_PUSH, SyncCore, check_pull
from omega.transport import InMemoryRequester
from tests.sync_support import (
    DEDUP,
    FLEET,
    FakeStore,
    Wall,
    brain_hash,
    in_process_link,
    open_brain,
    opened_counts,
    shard_settings,
    sync_settings,
)

T0 = 1_700_000_000.0
HUB = HubKey.generate(7)
#: The hub's long-term signer; TVs in the signed tests are provisioned with its verify key.
SIGNER = HubSigner.generate()


@pytest.fixture
def wall() -> Wall:
    w = Wall()
    w.t = time.time()  # the device client signs with the real clock
    return w


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def svc(store: FakeStore, wall: Wall) -> Iterator[ShardService]:
    with ShardService(shard_settings(rate_limit_interval_s=0.0, pull_interval_s=0.0),
                      store, FLEET, DEDUP, wall_clock=wall) as s:
        yield s


@pytest.fixture
def brain(tmp_path: Path) -> Iterator[Brain]:
    b = open_brain(tmp_path / "brain")
    yield b
    b.close()


def watch(brain: Brain, ids: list[str], t0: float = T0, fraction: float = 1.0) -> None:
    for i, cid in enumerate(ids):
        brain.observe(ViewingEvent(cid, fraction, t0 + 60 * i))


def core(brain: Brain, svc: ShardService, wall: Wall, **kw: Any) -> SyncCore:
    return SyncCore(brain, sync_settings(HUB, **kw), lambda g: in_process_link(svc),
                    wall=wall, rng=random.Random(1))


def stored(store: FakeStore) -> Counter[bytes]:
    with store.read() as kv:
        return Counter(state.all_reports(kv))


def opened(blobs: Counter[bytes]) -> tuple[int, int]:
    return opened_counts(blobs, HUB)


def test_views_become_one_constant_push_acked_then_the_queue_is_empty(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    watch(brain, ["m1", "m2", "m3"])  # windowed pairs: (1,2) (1,3) (2,3)
    c = core(brain, svc, wall)
    out = c.sync()
    assert out.error == "" and out.built == 3 and out.pushed == 3
    got = stored(store)
    assert sum(got.values()) == 8 and set(got.values()) == {1}  # 8 reports, each once
    assert all(len(b) == REPORT_BYTES for b in got)
    assert opened(got) == (3, 5)
    assert c.queued() == 0
    # Nothing new watched: the next push is all dummies, of the same count and size.
    c.sync()
    got = stored(store)
    assert sum(got.values()) == 16 and opened(got) == (3, 13)


def test_only_new_views_pair_and_the_window_limits_pairs(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    c = core(brain, svc, wall, window=2, daily_budget=100)
    watch(brain, ["m1", "m2", "m3", "m4"])
    assert c.build() == 5  # (1,2) (1,3) (2,3) (2,4) (3,4)
    watch(brain, ["m5"], t0=T0 + 1000)
    assert c.build() == 2  # (3,5) (4,5): only pairs with the new view
    assert c.build() == 0


def test_daily_budget_caps_real_reports_and_renews_next_day(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    c = core(brain, svc, wall, daily_budget=4)
    watch(brain, [f"m{i}" for i in range(6)])
    assert c.build() == 4
    watch(brain, ["m7"], t0=T0 + 1000)
    assert c.build() == 0  # the day's budget is spent: these pairs are dropped
    wall.t += 86_400
    watch(brain, ["m8", "m9"], t0=T0 + 2000)
    assert c.build() == 4
    st = c.status()
    assert st["budget_used_today"] == 4 and st["epsilon_today"]["reports"] == 4
    assert st["epsilon_today"]["local"] > 0


def test_a_push_lost_after_commit_is_retried_with_its_sequence_and_stored_once(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    watch(brain, ["m1", "m2"])
    c = core(brain, svc, wall)
    store.faults.append((LeaderChanged("lost after commit"), True))
    out = c.sync()
    assert out.error == ""  # the client retried the same sequence: a duplicate, same ack
    got = stored(store)
    assert sum(got.values()) == 8 and set(got.values()) == {1}
    assert opened(got) == (1, 7)


def test_a_push_interrupted_by_a_crash_resumes_with_the_same_sequence_and_reports(
        tmp_path: Path, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    brain = open_brain(tmp_path / "b")
    watch(brain, ["m1", "m2", "m3"])
    c = core(brain, svc, wall)
    c.build()
    # The push was decided and written, then the TV died before (or after) sending it.
    store.faults.append((LeaderChanged("answer lost"), True))
    c._link = in_process_link(svc)
    c._link._client.settings = type(c._link._client.settings)(attempts=1)  # no retry now
    assert c.sync().error != ""
    pending = msgpack.unpackb(brain.sync_state(K_PUSH))["pending"]
    assert pending is not None
    brain.close()
    brain = open_brain(tmp_path / "b")  # restart
    c2 = core(brain, svc, wall)
    assert c2.sync().error == ""
    assert c2.status()["last_push_seq"] == pending["seq"]
    got = stored(store)
    assert sum(got.values()) == 8 and set(got.values()) == {1} and opened(got) == (3, 5)
    assert c2.queued() == 0
    brain.close()


def test_a_build_interrupted_between_its_writes_is_finished_once(
        brain: Brain, svc: ShardService, wall: Wall) -> None:
    c = core(brain, svc, wall)
    watch(brain, ["m1", "m2", "m3"])
    c.build()
    blobs = [p for _, p in brain.peek_outbound(10)]
    # As if the TV died after recording the build and queuing only the first blob.
    brain.ack_outbound(10**9)
    brain.enqueue_outbound(blobs[0])
    contrib = msgpack.unpackb(brain.sync_state(K_CONTRIB))
    contrib["blobs"] = blobs
    brain.set_sync_state(K_CONTRIB, msgpack.packb(contrib))
    c.recover()
    c.recover()
    assert sorted(p for _, p in brain.peek_outbound(10)) == sorted(blobs)
    assert c.build() == 0


def _release(svc: ShardService, version: int, **kw: Any) -> None:
    svc.set_global_update(GlobalUpdate(version, **kw))


def test_pull_merges_crowd_lists_and_new_content_with_its_embedding(
        brain: Brain, svc: ShardService, wall: Wall) -> None:
    vec = np.random.default_rng(3).standard_normal(384).astype(np.float32)
    vec /= np.linalg.norm(vec)
    _release(svc, 1, neighbours=(("m1", (("m2", 0.9), ("m3", 0.5))),),
             popularity=(("m1", 3.0),), trends=(("local", (("m4", 2.0),)),),
             new_content=(NewContent("new1", "A New Film", embedding_to_wire(vec)),))
    c = core(brain, svc, wall)
    out = c.sync()
    assert out.error == "" and out.pulls >= 1
    assert brain.status()["crowd_version"] == out.version > 0
    assert "new1" in brain.content_ids()
    got = brain.vectors(["new1"])[0]
    assert float(got @ vec) > 0.999  # the float16 embedding, not a re-embedded title
    assert brain.status()["crowd_titles"] == 1
    # Nothing new: the next sync pulls nothing.
    assert c.sync().pulls == 0


def test_catch_up_after_a_long_absence_takes_one_sync(
        brain: Brain, svc: ShardService, wall: Wall) -> None:
    rng = random.Random(4)
    for v in range(1, 8):  # a week of daily releases: 150 titles' top-20 lists each
        titles = rng.sample(range(1000), 150)
        _release(svc, v, neighbours=tuple(
            (f"t{i}", tuple((f"t{j}", 0.5) for j in rng.sample(range(1000), 20) if j != i))
            for i in titles), popularity=tuple((f"t{i}", float(v)) for i in titles))
    c = core(brain, svc, wall)
    out = c.sync()
    assert out.error == "" and 1 < out.pulls <= 64  # bounded pieces, one sync
    with svc._store.read() as kv:
        current = state.global_version(kv)
    assert brain.status()["crowd_version"] == current


# -- hostile pulls ----------------------------------------------------------------


def _frame(*fields: Any) -> bytes:
    """A PullResp frame built by hand (no validation): 5 fields, then no hub key."""
    return bytes(msgpack.packb([13, 1, *fields, 0, b"", b""], use_bin_type=True))


def _hostile(kind: str) -> bytes:
    emb = embedding_to_wire(np.ones(384, dtype=np.float32) / np.sqrt(384))
    if kind == "wrong_dims":
        return _frame(5, [], [], [], [["x1", "X", emb[:700]]])
    if kind == "nan":
        return _frame(5, [["m1", [["m2", float("nan")]]]], [], [], [])
    if kind == "nan_embedding":
        bad = b"\x00\x7e" + emb[2:]  # float16 NaN in the first value
        return _frame(5, [], [], [], [["x1", "X", bad]])
    if kind == "oversized":
        return _frame(5, [], [[f"t{i:05d}", 1.0] for i in range(2000)],
                      [], [["x" * 60 + f"{i:02d}", "T" * 250, emb] for i in range(60)])
    if kind == "older":
        return _frame(1, [["m1", [["m2", 0.5]]]], [], [], [])
    if kind == "unknown":
        return _frame(10**9, [["m1", [["m2", 0.5]]]], [], [], [])
    raise AssertionError(kind)


class HostileShard:
    """A shard that answers pushes and heartbeats truthfully and pulls with ``frame``."""

    def __init__(self, svc: ShardService, frame: bytes) -> None:
        self.svc = svc
        self.frame = frame

    def handle(self, data: bytes) -> Any:
        if data[1:2] == b"\x0c" or (len(data) > 1 and data[1] == 12):
            return self.frame
        return self.svc.handle(data)


@pytest.mark.parametrize("kind,error", [
    ("wrong_dims", E.MalformedPull), ("nan", E.MalformedPull),
    ("nan_embedding", E.MalformedPull), ("oversized", E.PullTooLarge),
    ("older", E.StalePull), ("unknown", E.UnknownPullVersion),
])
def test_hostile_pull_is_refused_with_its_type_and_the_brain_is_unchanged(
        tmp_path: Path, svc: ShardService, wall: Wall, kind: str, error: type) -> None:
    from omega.client import ClientSettings
    from omega.sync.link import DeviceLink
    from omega.sync.settings import ShardGroup
    from tests.sync_support import key

    _release(svc, 1, popularity=(("m1", 1.0),))
    _release(svc, 2, popularity=(("m2", 1.0),))
    brain = open_brain(tmp_path / "b")
    brain.apply_crowd({}, {}, [], 3)  # merged version 3 (so "older" is older)
    brain.close()
    before = brain_hash(tmp_path / "b")
    brain = open_brain(tmp_path / "b")
    hostile = HostileShard(svc, _hostile(kind))
    link = DeviceLink(ShardGroup("g1", "local", ("inproc://x",)), "tv1", key("tv1"),
                      ClientSettings(attempts=1),
                      requester=InMemoryRequester(hostile.handle, svc.on_error))
    c = SyncCore(brain, sync_settings(HUB), lambda g: link, wall=wall, rng=random.Random(2))
    c.announce(5)
    with pytest.raises(error):
        c.merge(link.pull(3, "local"))
    brain.close()
    assert brain_hash(tmp_path / "b") == before


def test_a_crowd_update_the_brain_refuses_changes_nothing(
        tmp_path: Path, svc: ShardService, wall: Wall) -> None:
    brain = open_brain(tmp_path / "b")
    brain.close()
    before = brain_hash(tmp_path / "b")
    brain = open_brain(tmp_path / "b")
    vec = np.ones(384, dtype=np.float32) / np.sqrt(384)
    # The wire allows a negative trend velocity; the brain does not.
    resp = PullResp(5, neighbours=(("m1", (("m2", 0.5),)),), trends=(("m4", -1.0),),
                    new_content=(NewContent("x1", "X", embedding_to_wire(vec)),))
    c = SyncCore(brain, sync_settings(HUB), lambda g: in_process_link(svc), wall=wall)
    c.announce(5)
    with pytest.raises(E.RejectedCrowd):  # refused before the new content is written
        c.merge(resp)
    brain.close()
    assert brain_hash(tmp_path / "b") == before


def test_check_pull_refuses_embeddings_of_another_model_size() -> None:
    vec = np.ones(384, dtype=np.float32) / np.sqrt(384)
    resp = PullResp(2, new_content=(NewContent("x1", "X", embedding_to_wire(vec)),))
    with pytest.raises(E.WrongDimensions):
        check_pull(resp, 1, 2, dim=256)
    assert EMBEDDING_BYTES == 768
    vecs, _ = check_pull(resp, 1, 2, dim=384)
    assert vecs["x1"].shape == (384,)


def test_a_crash_after_the_queue_ack_never_acks_reports_queued_later(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    """The brain numbers an emptied queue from 1 again: a push remembered from before a
    crash must not take the new entries for its own."""
    c = core(brain, svc, wall)
    watch(brain, ["m1", "m2"])
    c.build()
    assert c.push() is not None and c.queued() == 0
    state = msgpack.unpackb(brain.sync_state(K_PUSH))
    assert state["pending"] is None
    # As if the TV died between acking the queue and clearing its pending push.
    sent = list(stored(store))
    real = [b for b in sent if _is_real(b)]
    state["pending"] = {"seq": state["last"], "real": real, "reports": sent}
    brain.set_sync_state(K_PUSH, msgpack.packb(state))
    watch(brain, ["m3"], t0=T0 + 1000)
    assert c.build() == 2  # (1,3) (2,3): queued as entries 1 and 2 again
    assert c.sync().error == ""
    assert c.queued() == 0
    assert opened(stored(store))[0] == 3  # the two new reports reached the shard


def _is_real(blob: bytes) -> bool:
    return opened_counts([blob], HUB)[0] == 1


def _announce(key: HubKey, signer: HubSigner = SIGNER) -> dict[str, Any]:
    """A release's key fields, as the hub (or ``signer``) announces ``key``."""
    return {"hub_key_id": key.key_id, "hub_public_key": key.public,
            "hub_key_sig": signer.sign(key.key_id, key.public)}


def signed_core(brain: Brain, svc: ShardService, wall: Wall, **kw: Any) -> SyncCore:
    return core(brain, svc, wall, hub_verify_key=SIGNER.verify_key.hex(), **kw)


def test_a_pull_announcing_a_newer_signed_hub_key_rotates_the_tv_to_it(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall) -> None:
    new = HubKey.generate(HUB.key_id + 1)
    _release(svc, 1, popularity=(("m1", 1.0),), **_announce(new))
    c = signed_core(brain, svc, wall)
    assert c.sync().error == ""
    key = c.hub_key()
    assert key is not None and key.key_id == new.key_id
    assert c.status()["hub_key_refused"] == 0 and c.status()["hub_verify_key"] is True
    watch(brain, ["m1", "m2"])
    before = set(stored(store))
    assert c.sync().error == ""
    fresh = [b for b in stored(store) if b not in before]
    assert len(fresh) == 8
    assert opened_counts(fresh, new) == (1, 7)  # sealed to the new key
    # A restarted TV (a new SyncCore over the same brain) still seals to the new key.
    c2 = signed_core(brain, svc, wall)
    assert c2.hub_key() == new.public_only()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno == logging.WARNING and "hub key announcement refused" in r.getMessage()]


def test_a_key_the_shard_substitutes_is_refused_the_pull_still_merges_and_it_is_counted(
        brain: Brain, svc: ShardService, store: FakeStore, wall: Wall,
        caplog: pytest.LogCaptureFixture) -> None:
    """The hostile shard's own key pair under the next id, signed by its own signer: the
    TV merges the release, keeps sealing to the hub's key, warns once, counts each pull."""
    shard_key = HubKey.generate(HUB.key_id + 1)
    _release(svc, 1, popularity=(("m1", 1.0),), **_announce(shard_key, HubSigner.generate()))
    c = signed_core(brain, svc, wall)
    caplog.set_level(logging.INFO, logger="omega.sync")
    out = c.sync()
    assert out.error == "" and out.version > 0  # the pull itself stands
    assert brain.status()["crowd_version"] == out.version
    assert c.hub_key() == HUB.public_only()
    st = c.status()
    assert st["hub_key_refused"] == 1 and st["hub_key_refusal"].startswith("bad_signature")
    assert st["hub_key_id"] == HUB.key_id
    warned = _warnings(caplog)
    assert len(warned) == 1
    fields = warned[0].__dict__["fields"]
    assert fields["reason"] == "bad_signature" and fields["announced_key_id"] == 8
    # The next pull brings the same forged key: counted again, not logged again.
    _release(svc, 2, popularity=(("m2", 1.0),), **_announce(shard_key, HubSigner.generate()))
    c.announce(10**6)
    c.pull(ask_version=True)
    assert c.status()["hub_key_refused"] >= 2
    assert len(_warnings(caplog)) == 2  # a new signature: a distinct announcement
    c.pull(ask_version=True)
    assert len(_warnings(caplog)) == 2
    # Reports keep going to the hub's key: the shard cannot open them.
    watch(brain, ["m1", "m2"])
    before = set(stored(store))
    assert c.sync().error == ""
    fresh = [b for b in stored(store) if b not in before]
    assert opened_counts(fresh, HUB) == (1, 7)


def test_a_replayed_older_announcement_does_not_roll_the_tv_back(
        brain: Brain, svc: ShardService, wall: Wall, caplog: pytest.LogCaptureFixture) -> None:
    newer = HubKey.generate(HUB.key_id + 1)
    _release(svc, 1, popularity=(("m1", 1.0),), **_announce(newer))
    c = signed_core(brain, svc, wall)
    assert c.sync().error == "" and c.hub_key() == newer.public_only()
    caplog.set_level(logging.INFO, logger="omega.sync")
    _release(svc, 2, popularity=(("m2", 1.0),), **_announce(HUB))  # genuine, but older
    c.announce(10**6)
    c.pull(ask_version=True)
    assert c.hub_key() == newer.public_only()
    st = c.status()
    # What a lagging shard replica also serves: counted apart, no warning.
    assert st["hub_key_stale"] >= 1 and st["hub_key_refused"] == 0
    assert not _warnings(caplog)


def test_a_tv_without_a_verify_key_keeps_its_provisioned_key(
        brain: Brain, svc: ShardService, wall: Wall, caplog: pytest.LogCaptureFixture) -> None:
    """An old config (no ``hub_verify_key``): even the hub's real next key is refused."""
    caplog.set_level(logging.INFO, logger="omega.sync")
    _release(svc, 1, popularity=(("m1", 1.0),), **_announce(HubKey.generate(HUB.key_id + 1)))
    c = core(brain, svc, wall)
    assert c.sync().error == ""
    assert c.hub_key() == HUB.public_only()
    st = c.status()
    assert st["hub_verify_key"] is False and st["hub_key_refused"] == 1
    assert st["hub_key_refusal"].startswith("no_verify_key")
    assert len(_warnings(caplog)) == 1


def test_a_key_stored_unsigned_by_an_older_version_is_not_used(
        brain: Brain, svc: ShardService, wall: Wall) -> None:
    """``sync.hub_key`` written before announcements were signed ([id, key]): it may be a
    shard's, so the TV falls back on its provisioned key until a signed one comes."""
    import msgpack as mp

    from omega.sync.core import K_HUB

    planted = HubKey.generate(HUB.key_id + 5)
    brain.set_sync_state(K_HUB, mp.packb([planted.key_id, planted.public]))
    c = signed_core(brain, svc, wall)
    assert c.hub_key() == HUB.public_only()
    genuine = HubKey.generate(HUB.key_id + 1)
    _release(svc, 1, popularity=(("m1", 1.0),), **_announce(genuine))
    assert c.sync().error == ""
    assert c.hub_key() == genuine.public_only()


def test_the_crowd_is_pulled_at_most_every_refresh_period(
        brain: Brain, svc: ShardService, wall: Wall) -> None:
    """Pushes go on at every sync; pulls at the first sync, every sync while a delta is
    unfinished, then once per ``crowd_refresh_s`` (a pull since the last brings each
    changed list once, so the TV's downlink is set here, not by the hub's cadence)."""
    now = [1000.0]
    c = SyncCore(brain, sync_settings(HUB, crowd_refresh_s=3600.0, pull_max_rounds=1),
                 lambda g: in_process_link(svc), wall=wall, mono=lambda: now[0],
                 rng=random.Random(1))
    rng = random.Random(5)
    _release(svc, 1, neighbours=tuple(  # more than one pull's worth
        (f"t{i}", tuple((f"t{j}", 0.5) for j in rng.sample(range(1000), 20) if j != i))
        for i in range(150)))
    first = c.sync()
    assert first.error == "" and first.pulls == 1
    with svc._store.read() as kv:
        current = state.global_version(kv)
    assert c.applied_version() < current  # unfinished: the next syncs go on pulling
    while c.applied_version() < current:
        now[0] += 60
        assert c.sync().pulls == 1
    _release(svc, 2, neighbours=(("t1", (("t2", 0.9),)),))
    watch(brain, ["m1", "m2"])
    now[0] += 600
    out = c.sync()
    assert out.error == "" and out.pushed == 1 and out.pulls == 0  # pushed, not pulled
    assert c.applied_version() == current
    assert c.status()["next_pull_in_s"] == 3000.0
    now[0] += 3000
    assert c.sync().pulls == 1 and c.applied_version() > current
