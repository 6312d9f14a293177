"""The federation path in one process: shard forwarder → shuffle store → hub state
machine → release parts → shard follower. Real LMDB for the shuffler, the real
state machines over ``MemoryKv``, real sealed reports."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omega.federation import hub
from omega.federation.batches import batch_id, split_parts
from omega.federation.forward import ReleaseFollower, ShardForwarder
from omega.federation.hubservice import ContentError, HubService, NotNext
from omega.federation.publish import fold, read_body
from omega.federation.release import ReleaseSettings
from omega.federation.report import HubKey, coview, seal, title_key
from omega.federation.settings import HubSettings
from omega.federation.shuffle import ShuffleStore
from omega.protocol import (
    BatchAck,
    ErrorReply,
    GlobalUpdate,
    NotLeaderError,
    RegionBatch,
    ShardBatch,
    Unavailable,
    UpdateRequest,
    decode,
    embedding_to_wire,
    encode,
)
from omega.raft import KvReader, MemoryKv, NotLeader
from omega.shard.state import ReportBatch

TITLES = [f"m{i}" for i in range(12)]
EMB = [float(i % 7) / 7 for i in range(384)]


class MemStore:
    """The HubStore port over MemoryKv: submit applies at once."""

    def __init__(self) -> None:
        self.kv = MemoryKv(hub.DATABASES)
        self.apply = hub.make_apply(fold)
        self.index = 0
        self.leading = True
        self.lock = threading.RLock()

    def submit(self, command: bytes, timeout_s: float) -> Any:
        with self.lock:
            if not self.leading:
                raise NotLeader(None)
            self.index += 1
            return self.apply(self.kv, command, self.index)

    @contextlib.contextmanager
    def read(self) -> Iterator[KvReader]:
        with self.lock:
            yield self.kv

    def is_leader(self) -> bool:
        return self.leading

    def leader(self) -> str | None:
        return "127.0.0.1:1" if self.leading else None

    def status(self) -> dict[str, Any]:
        return {}


def noiseless() -> ReleaseSettings:
    return ReleaseSettings(noise=False, min_contributors=1, threshold_sigmas=0.0)


@pytest.fixture
def hub_svc() -> HubService:
    svc = HubService(HubSettings(), noiseless(), MemStore(), rng=np.random.default_rng(1))
    svc.ensure_key()
    svc.add_content([{"id": t, "title": f"Title {t}", "embedding": EMB} for t in TITLES])
    return svc


def public_key(svc: HubService) -> HubKey:
    parts = svc.release_parts()
    assert parts and parts[0].hub_key_id
    return HubKey(parts[0].hub_key_id, parts[0].hub_public_key)


def reports(key: HubKey, pairs: list[tuple[str, str]], dummies: int = 0) -> list[bytes]:
    out = [seal(coview(a, b, 1.0), key) for a, b in pairs]
    return out + [seal(None, key) for _ in range(dummies)]


def test_batch_ids_and_parts_do_not_depend_on_order() -> None:
    blobs = [bytes([i]) * 73 for i in range(10)]
    shuffled = blobs[:]
    random.Random(3).shuffle(shuffled)
    assert batch_id(blobs) == batch_id(shuffled)
    assert split_parts(blobs, max_reports=4) == split_parts(shuffled, max_reports=4)
    assert [len(p) for p in split_parts(blobs, max_reports=4)] == [4, 4, 2]


def test_shuffle_store_is_idempotent_and_durable(tmp_path: Path) -> None:
    key = HubKey.generate(1)
    good = reports(key, [("m1", "m2")] * 3)
    store = ShuffleStore(tmp_path / "s.mdb")
    assert store.receive("b1", 0, good, 1000) is True
    assert store.receive("b1", 0, good, 2000) is False  # a retry: stored once
    assert store.receive("b2", 0, [b"junk", *good[:1]], 1000) is True  # junk dropped
    assert not store.due(1500, min_batches=3, max_wait_s=10)
    assert store.due(1500, min_batches=2, max_wait_s=10)
    store.close()
    store = ShuffleStore(tmp_path / "s.mdb")  # reopened: nothing lost
    st = store.stats()
    assert (st["held_parts"], st["held_reports"], st["dropped_reports_total"]) == (2, 4, 1)
    mix = store.mix()
    assert mix is not None and store.stats()["held_reports"] == 0
    (out,) = store.pending()
    assert out.batch_id == mix and sorted(out.reports) == sorted(good + good[:1])
    assert store.acked(mix, 0) and not store.acked(mix, 0)
    assert store.stats()["forwarded_reports_total"] == 4 and store.pending() == []
    assert store.prune(10**13) == 2
    store.close()


def test_hub_opens_sums_and_releases_once_per_part(hub_svc: HubService) -> None:
    key = public_key(hub_svc)
    blobs = reports(key, [("m1", "m2")] * 5 + [("m3", "m4")] * 2, dummies=3)
    msg = RegionBatch("eu", batch_id(blobs), tuple(blobs))
    ack = decode(hub_svc.handle(encode(msg)))
    assert ack == BatchAck(msg.batch_id, 0, False)
    again = decode(hub_svc.handle(encode(msg)))
    assert again == BatchAck(msg.batch_id, 0, True)
    st = hub_svc.status()
    assert st["counters"]["opened"] == 7 and st["counters"]["dummies"] == 3
    info = hub_svc.release()
    assert info["released"] and info["spent"] and info["pairs_published"] >= 1
    parts = hub_svc.release_parts()
    nb = dict(parts[0].neighbours)
    assert "m2" in dict(nb["m1"]) and "m4" in dict(nb["m3"])
    assert {c.id for p in parts for c in p.new_content} == set(TITLES)
    trends = dict(parts[0].trends)["eu"]  # per region: the aggregator's label
    assert {"m1", "m2"} <= {t for t, _ in trends}
    # Nothing new: no release, no budget spent.
    assert hub_svc.release()["released"] is False


def test_hub_drops_foreign_reports_and_follower_is_redirected(hub_svc: HubService) -> None:
    stranger = HubKey.generate(99)
    blobs = reports(stranger, [("m1", "m2")])
    ack = decode(hub_svc.handle(encode(RegionBatch("eu", "x1", tuple(blobs)))))
    assert isinstance(ack, BatchAck)
    assert hub_svc.status()["counters"]["dropped"] == 1
    store = hub_svc._store
    assert isinstance(store, MemStore)
    store.leading = False
    err = decode(hub_svc.handle(encode(RegionBatch("eu", "x2", tuple(blobs)))))
    assert isinstance(err, ErrorReply) and err.code == "not_leader"


def test_rotation_keeps_the_old_key_open_during_grace(hub_svc: HubService) -> None:
    old = public_key(hub_svc)
    hub_svc.rotate_key()
    new = public_key(hub_svc)
    assert new.key_id == old.key_id + 1
    blobs = reports(old, [("m5", "m6")]) + reports(new, [("m5", "m6")])
    hub_svc.handle(encode(RegionBatch("eu", "r1", tuple(blobs))))
    assert hub_svc.status()["counters"]["opened"] == 2
    # Past the grace period the retired key no longer opens.
    late = HubService(HubSettings(key_grace_s=0), noiseless(), hub_svc._store,
                      wall=lambda: 4e9)
    late.handle(encode(RegionBatch("eu", "r2", tuple(reports(old, [("m5", "m6")])))))
    assert late.status()["counters"]["dropped"] == 1


def test_a_rotation_whose_answer_was_lost_is_not_made_twice(
        hub_svc: HubService, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader moves while its rotation commits: the operator hears "it may still be
    applied" (not a bad request), and asking again for the same key id answers with
    that key, announced, instead of rotating once more."""
    from omega.raft import LeaderChanged

    store = hub_svc._store
    assert isinstance(store, MemStore)
    real = store.submit
    old = public_key(hub_svc)

    def lost_answer(command: bytes, timeout_s: float) -> Any:
        real(command, timeout_s)  # applied, but this replica stops leading first
        raise LeaderChanged("this replica stopped being the leader")

    monkeypatch.setattr(store, "submit", lost_answer)
    with pytest.raises(Unavailable, match="may still be applied"):
        hub_svc.rotate_key(old.key_id + 1)
    monkeypatch.setattr(store, "submit", real)
    assert public_key(hub_svc).key_id == old.key_id  # its announcement was lost too
    again = hub_svc.rotate_key(old.key_id + 1)
    assert again["key_id"] == old.key_id + 1
    assert hub_svc.status()["current_key"] == old.key_id + 1
    new = public_key(hub_svc)  # announced by the second ask
    assert hub_svc.status()["last_release"]["spent"] is False  # no reports: no ε
    assert (new.key_id, new.public.hex()) == (again["key_id"], again["public_key"])
    version = hub_svc.status()["counters"]["version"]
    assert hub_svc.rotate_key(new.key_id)["key_id"] == new.key_id
    assert hub_svc.status()["counters"]["version"] == version  # nothing new: no release
    with pytest.raises(NotNext, match=rf"the next one \({new.key_id + 1}\)"):
        hub_svc.rotate_key(old.key_id)  # retired: neither current nor next


def test_a_release_whose_answer_was_lost_is_not_made_twice(
        hub_svc: HubService, monkeypatch: pytest.MonkeyPatch) -> None:
    """A release spends ε: asked again by version after its answer was lost, it is
    answered as made (from the stored release), and no second one is made even though
    new reports arrived in between."""
    from omega.raft import CommitTimeout

    store = hub_svc._store
    assert isinstance(store, MemStore)
    real = store.submit
    key = public_key(hub_svc)
    hub_svc.handle(encode(RegionBatch("eu", "v1", tuple(reports(key, [("m1", "m2")] * 3)))))
    v = hub_svc.status()["counters"]["version"]

    def lost_answer(command: bytes, timeout_s: float) -> Any:
        result = real(command, timeout_s)
        if hub.decode_command(command).__class__ is hub.Publish:
            raise CommitTimeout("no outcome in time")
        return result

    monkeypatch.setattr(store, "submit", lost_answer)
    with pytest.raises(Unavailable, match="may still be applied"):
        hub_svc.release(version=v + 1)
    monkeypatch.setattr(store, "submit", real)
    hub_svc.handle(encode(RegionBatch("eu", "v2", tuple(reports(key, [("m3", "m4")] * 3)))))
    again = hub_svc.release(version=v + 1)
    assert again["released"] and again["again"] and again["version"] == v + 1
    assert again["spent"] and again["reports"] == 3
    st = hub_svc.status()
    assert st["counters"]["version"] == v + 1 and st["pending_batches"] == 1  # v2 waits
    with pytest.raises(NotNext, match=rf"the next one \({v + 2}\)"):
        hub_svc.release(version=v + 3)
    assert hub_svc.release(version=v + 2)["spent"]
    assert hub_svc.status()["last_release"]["reports"] == 6  # the next one sums v2 too


def test_leader_work_refused_by_the_store_is_a_typed_error(
        hub_svc: HubService, monkeypatch: pytest.MonkeyPatch) -> None:
    from omega.raft import Discarded

    store = hub_svc._store
    assert isinstance(store, MemStore)

    def discarded(command: bytes, timeout_s: float) -> Any:
        raise Discarded("another entry took its index")

    monkeypatch.setattr(store, "submit", discarded)
    with pytest.raises(NotLeaderError, match="not applied"):
        hub_svc.add_content([{"id": "late", "title": "Late", "embedding": EMB}])


def test_content_add_is_all_or_nothing(hub_svc: HubService) -> None:
    before = hub_svc.status()["titles"]
    with pytest.raises(ContentError):
        hub_svc.add_content([{"id": "ok1", "title": "Fine", "embedding": EMB},
                             {"id": "bad id", "title": "Nope", "embedding": EMB}])
    with pytest.raises(ContentError):  # no embedder configured
        hub_svc.add_content([{"id": "noemb", "title": "No embedding"}])
    assert hub_svc.status()["titles"] == before
    svc = HubService(HubSettings(), noiseless(), hub_svc._store,
                     embed=lambda texts: np.ones((len(texts), 384), dtype=np.float32) / 20)
    assert svc.add_content([{"id": "new1", "title": "Fresh", "metadata": {"genres": ["x"]}}]) \
        == {"added": 1, "embedded": 1}
    assert svc.release()["released"]  # a new title alone makes a release (no budget)
    assert "new1" in {c.id for p in svc.release_parts() for c in p.new_content}


class FakeShard:
    def __init__(self, buckets: list[ReportBatch]) -> None:
        self.buckets = buckets
        self.released: list[int] = []
        self.updates: list[GlobalUpdate] = []
        self.done = 0

    def is_leader(self) -> bool:
        return True

    def take_batch(self, min_devices: int | None = None) -> ReportBatch | None:
        left = [b for b in self.buckets if b.bucket not in self.released]
        return left[0] if left else None

    def release_batch(self, bucket: int) -> Any:
        self.released.append(bucket)
        return ("released", 1)

    def close_open_bucket(self, min_devices: int | None = None) -> Any:
        return ("open", 0)

    def set_global_update(self, update: GlobalUpdate, timeout_s: float | None = None
                          ) -> tuple[str, int]:
        self.updates.append(update)
        if update.part == update.parts - 1:
            self.done = update.version
        return ("applied", 1)

    def release_versions(self) -> tuple[int, int]:
        return self.done, self.done


def test_whole_path_in_process(tmp_path: Path, hub_svc: HubService) -> None:
    key = public_key(hub_svc)
    shard = FakeShard([ReportBatch(0, 5, tuple(reports(key, [("m7", "m8")] * 4))),
                       ReportBatch(1, 5, tuple(reports(key, [("m7", "m9")] * 3)))])
    agg = ShuffleStore(tmp_path / "agg.mdb")
    fails = [True]

    def to_aggregator(msg: ShardBatch) -> BatchAck:
        if fails and fails.pop():
            raise OSError("aggregator unreachable")  # the bucket stays, forwarded later
        agg.receive(msg.batch_id, msg.part, msg.reports, 1)
        return BatchAck(msg.batch_id, msg.part)

    fwd = ShardForwarder(shard, to_aggregator)
    with pytest.raises(OSError):
        fwd.forward()
    assert shard.released == []
    assert fwd.forward().batches == 2 and shard.released == [0, 1]
    agg.mix()
    for p in agg.pending():
        ack = decode(hub_svc.handle(encode(RegionBatch("eu", p.batch_id, p.reports, p.part,
                                                       p.parts))))
        assert isinstance(ack, BatchAck) and agg.acked(ack.batch_id, ack.part)
    info = hub_svc.release()
    assert info["released"]
    follower = ReleaseFollower(shard, lambda req: decode(hub_svc.handle(encode(req))))
    assert follower.catch_up() == info["version"]
    assert follower.catch_up() == 0  # nothing newer
    got = {t: dict(n) for u in shard.updates for t, n in u.neighbours}
    assert set(got["m7"]) == {"m8", "m9"}
    body = read_body(hub.release(hub_svc._store.kv)[2])  # type: ignore[attr-defined, index]
    assert body[5]["reports"] == 7
    req = decode(hub_svc.handle(encode(UpdateRequest(info["version"], 0))))
    assert isinstance(req, GlobalUpdate) and req.neighbours == ()
    assert title_key("m7") != title_key("m8")
    agg.close()


def test_aggregator_service_acks_stores_and_keeps_what_the_hub_did_not_ack(
        tmp_path: Path) -> None:
    from omega.federation.aggregator import AggregatorService
    from omega.federation.settings import AggregatorSettings

    key = HubKey.generate(1)
    blobs = tuple(reports(key, [("m1", "m2")] * 3))
    store = ShuffleStore(tmp_path / "agg.mdb", max_held_reports=4)
    sent: list[RegionBatch] = []
    hub_up = [False]

    def send(msg: RegionBatch) -> BatchAck:
        if not hub_up[0]:
            raise ConnectionError("hub down")
        sent.append(msg)
        return BatchAck(msg.batch_id, msg.part)

    svc = AggregatorService(AggregatorSettings(region="eu", min_batches=1), store, send,
                            wall=lambda: 1000.0)
    assert decode(svc.handle(encode(ShardBatch("b1", blobs)))) == BatchAck("b1", 0, False)
    assert decode(svc.handle(encode(ShardBatch("b1", blobs)))) == BatchAck("b1", 0, True)
    full = decode(svc.handle(encode(ShardBatch("b2", blobs))))  # 3 + 3 > 4 held
    assert isinstance(full, ErrorReply) and full.code == "unavailable"
    bad = decode(svc.handle(b"\x93\x14\x01\xc0"))
    assert isinstance(bad, ErrorReply) and bad.code == "bad_request"
    r = svc.round()
    assert r["mixed"] and r["failed"] == 1 and store.stats()["pending_reports"] == 3
    hub_up[0] = True
    r = svc.round()
    assert r["parts_sent"] == 1 and store.stats()["pending_reports"] == 0
    assert sent[0].region == "eu" and sorted(sent[0].reports) == sorted(blobs)
    assert svc.status()["forwarded_reports_total"] == 3
    store.close()


def test_catch_up_request_beyond_the_last_part_is_refused(hub_svc: HubService) -> None:
    parts = hub_svc.release_parts()
    err = decode(hub_svc.handle(encode(UpdateRequest(0, len(parts)))))
    assert isinstance(err, ErrorReply) and err.code == "bad_request"


def test_a_part_whose_commit_fails_is_answered_retry_and_stored_once_later(
        hub_svc: HubService, monkeypatch: pytest.MonkeyPatch) -> None:
    from omega.raft import CommitTimeout

    store = hub_svc._store
    assert isinstance(store, MemStore)
    real = store.submit
    blobs = tuple(reports(public_key(hub_svc), [("m1", "m2")] * 2))

    def timeout_after_apply(command: bytes, timeout_s: float) -> Any:
        real(command, timeout_s)  # committed, but the caller never hears it
        raise CommitTimeout("no outcome in time")

    monkeypatch.setattr(store, "submit", timeout_after_apply)
    err = decode(hub_svc.handle(encode(RegionBatch("eu", "t1", blobs))))
    assert isinstance(err, ErrorReply) and err.code == "unavailable"
    monkeypatch.setattr(store, "submit", real)
    assert decode(hub_svc.handle(encode(RegionBatch("eu", "t1", blobs)))) == BatchAck("t1", 0, True)
    assert hub_svc.status()["counters"]["opened"] == 2


def test_ctl_federation_and_content_commands(tmp_path: Path, hub_svc: HubService) -> None:
    from omega.actors.context import NodeContext
    from omega.config import HubConfig, ShardConfig
    from omega.ops.control import ControlHandler
    from omega.protocol import CtlReply, CtlRequest

    class Hook:  # what HubActor publishes, over the in-process service
        def status(self) -> dict[str, Any]:
            return hub_svc.status()

        def trigger(self, version: int | None = None) -> dict[str, Any]:
            return hub_svc.release(version=version)

        def rotate_key(self, key_id: int | None = None) -> dict[str, Any]:
            return hub_svc.rotate_key(key_id)

        def add_content(self, items: Any) -> dict[str, Any]:
            return hub_svc.add_content(items)

    ctx = NodeContext(cfg=HubConfig(), handle=object())
    ctl = ControlHandler(ctx)

    def ask(command: str, target: str = "") -> Any:
        return decode(ctl.handle(encode(CtlRequest(command, target))))

    none = ask("federation")
    assert isinstance(none, ErrorReply) and none.code == "unavailable"
    ctx.publish("federation", Hook())
    st = ask("federation")
    assert isinstance(st, CtlReply) and st.payload["current_key"] == 1
    assert ask("federation", "rotate-key").payload["key_id"] == 2
    assert ask("federation", "rotate-key=3").payload["key_id"] == 3
    assert ask("federation", "rotate-key=3").payload["key_id"] == 3  # asked again: done
    for wrong_id in ("7", "x", "0", "-1", "99999999999"):
        refused = ask("federation", f"rotate-key={wrong_id}")
        assert isinstance(refused, ErrorReply) and refused.code == "bad_request"
    assert ask("federation").payload["current_key"] == 3
    v = ask("federation").payload["counters"]["version"]
    made = ask("federation", f"trigger={v + 1}")
    assert isinstance(made, CtlReply) and made.payload["released"] is False  # nothing new
    for wrong_v in (str(v + 5), "x", "0"):
        refused = ask("federation", f"trigger={wrong_v}")
        assert isinstance(refused, ErrorReply) and refused.code == "bad_request"
    bad = ask("federation", "explode")
    assert isinstance(bad, ErrorReply) and "rotate-key" in bad.message
    path = tmp_path / "titles.jsonl"
    path.write_text(json.dumps({"id": "ctl-1", "title": "Via ctl", "embedding": EMB}) + "\n\n")
    assert ask("content", str(path)).payload == {"added": 1, "embedded": 0}
    path.write_text('{"id": "ctl-2", "title": "Half a line"\n')
    broken = ask("content", str(path))
    assert isinstance(broken, ErrorReply) and f"{path}:1" in broken.message
    missing = ask("content", str(tmp_path / "nope.jsonl"))
    assert isinstance(missing, ErrorReply) and "cannot read" in missing.message
    shard_ctx = NodeContext(cfg=ShardConfig(), handle=object())
    shard_ctx.publish("federation", object())
    wrong = decode(ControlHandler(shard_ctx).handle(encode(CtlRequest("content", str(path)))))
    assert isinstance(wrong, ErrorReply) and "hub" in wrong.message
    versioned = decode(ControlHandler(shard_ctx).handle(encode(
        CtlRequest("federation", "trigger=3"))))
    assert isinstance(versioned, ErrorReply) and "hub only" in versioned.message


def test_opening_on_threads_gives_what_one_thread_gives() -> None:
    """A part opened in chunks on a pool sums, clips and counts exactly as in one go."""
    from concurrent.futures import ThreadPoolExecutor

    from omega.federation.publish import OPEN_CHUNK, open_batch

    key = HubKey.generate(7)
    foreign = HubKey.generate(8)
    rng = random.Random(3)
    # More co-views of one pair than a batch may add (so clipping acts), other pairs,
    # dummies, a report sealed to another key and a damaged one, in a random order.
    blobs = [seal(coview("m0", "m1", 1.0), key) for _ in range(300)]
    blobs += [seal(coview(*rng.sample(TITLES, 2), rng.random() or 1.0), key)
              for _ in range(3 * OPEN_CHUNK)]
    blobs += [seal(None, key) for _ in range(40)] + [seal(coview("m2", "m3", 1.0), foreign)]
    bad = bytearray(seal(coview("m4", "m5", 1.0), key))
    bad[-1] ^= 1
    blobs.append(bytes(bad))
    rng.shuffle(blobs)
    keys = {key.key_id: key}
    one = open_batch(keys, blobs)
    with ThreadPoolExecutor(4) as pool:
        many = open_batch(keys, blobs, pool)
    assert many == one
    assert (one.dummies, one.dropped, one.opened) == (40, 2, 300 + 3 * OPEN_CHUNK)


def test_open_threads_setting_is_checked() -> None:
    from omega.schema import SettingError

    assert HubSettings(open_threads=4).open_threads == 4
    with pytest.raises(SettingError, match="open_threads"):
        HubSettings(open_threads=-1)


def test_a_release_sends_titles_only_when_new_or_changed(hub_svc: HubService) -> None:
    """The broadcast carries the titles new or changed since the previous release; a
    catch-up from that release gets the same parts, from any older one the whole
    registry (content base 0)."""
    assert hub_svc.release()["released"]
    assert hub_svc.release()["released"] is False  # nothing new
    hub_svc.add_content([{"id": "m1", "title": "Title m1", "embedding": EMB}])  # the same
    assert hub_svc.release()["released"] is False
    hub_svc.add_content([{"id": "late", "title": "Late", "embedding": EMB},
                         {"id": "m0", "title": "Title m0", "embedding": EMB[::-1]}])
    info = hub_svc.release()
    v = info["version"]
    assert info["released"] and (info["titles"], info["titles_changed"]) == (13, 2)
    parts = hub_svc.release_parts()
    assert {p.content_base for p in parts} == {v - 1}
    sent = {c.id: c for p in parts for c in p.new_content}
    assert set(sent) == {"late", "m0"}
    assert sent["m0"].embedding == embedding_to_wire(EMB[::-1])

    def ask(since: int) -> list[GlobalUpdate]:
        first = decode(hub_svc.handle(encode(UpdateRequest(since, 0))))
        assert isinstance(first, GlobalUpdate)
        rest = [decode(hub_svc.handle(encode(UpdateRequest(since, i))))
                for i in range(1, first.parts)]
        return [first, *rest]

    assert ask(v - 1) == parts
    full = ask(v - 2)
    assert {p.content_base for p in full} == {0}
    assert {c.id for p in full for c in p.new_content} == set(TITLES) | {"late"}
    assert [p.neighbours for p in full] == [p.neighbours for p in parts]


def test_a_shard_that_missed_a_release_gets_its_titles_by_catch_up(
        hub_svc: HubService) -> None:
    """Hub → ReleaseFollower → a real shard service (state machine over MemoryKv): a
    release whose broadcast was lost leaves a hole the next broadcast (changes only)
    cannot fill; the shard does not count it complete, and its catch-up fills it."""
    from omega.shard import state
    from omega.sim.shardsim import in_process_shard

    shard = in_process_shard(b"f" * 32, b"d" * 32, lambda: 1000.0)
    try:
        follower = ReleaseFollower(shard, lambda req: decode(hub_svc.handle(encode(req))))

        def broadcast() -> None:
            for part in hub_svc.release_parts():
                assert follower.on_broadcast(part) == "applied"

        def titles() -> set[str]:
            with shard._store.read() as kv:
                return {ch.key.decode() for ch in state.changes_since(kv, 0)
                        if ch.kind == state.KIND_CONTENT}

        first = hub_svc.release()["version"]
        broadcast()  # a new shard: what came before (release 1, the key) it never had
        assert shard.release_versions() == (first, 0)
        assert follower.catch_up() == first
        assert shard.release_versions() == (first, first)
        hub_svc.add_content([{"id": "x1", "title": "Missed", "embedding": EMB}])
        hub_svc.release()  # its broadcast never reaches the shard
        hub_svc.add_content([{"id": "x2", "title": "Seen", "embedding": EMB}])
        last = hub_svc.release()["version"]
        broadcast()
        assert shard.release_versions() == (last, first)  # seen, not complete: a hole
        assert "x2" in titles() and "x1" not in titles()
        assert follower.catch_up() == last
        assert shard.release_versions() == (last, last)
        assert titles() == set(TITLES) | {"x1", "x2"}
        assert follower.catch_up() == 0
    finally:
        shard.close()
