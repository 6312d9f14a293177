"""One valid instance of every protocol message (shared by the protocol tests),
and the round trip of each through the wire."""

from __future__ import annotations

import numpy as np
import pytest

from omega.protocol import (
    MAX_FRAME,
    BatchAck,
    CatalogEntry,
    CtlReply,
    CtlRequest,
    ErrorReply,
    GlobalUpdate,
    Health,
    HealthReply,
    Heartbeat,
    HeartbeatAck,
    Message,
    NewContent,
    Pull,
    PullResp,
    Push,
    PushAck,
    RegionBatch,
    ShardBatch,
    TvImportCatalog,
    TvObserve,
    TvOk,
    TvRecommend,
    TvRecommendReply,
    TvStatus,
    UpdateRequest,
    decode,
    embedding_to_wire,
    encode,
)

NOW_MS = 1_763_700_000_000
EMB = embedding_to_wire(np.linspace(-1.0, 1.0, 384, dtype=np.float32))
EMB2 = embedding_to_wire(np.cos(np.arange(384, dtype=np.float32)))

SAMPLES: tuple[Message, ...] = (
    Health(),
    HealthReply("shard", "shard-1.a", "ok", 12.5, "0.1.0"),
    ErrorReply("not_leader", "writes go to the leader", "tcp://127.0.0.1:7001", None),
    ErrorReply("rate_limited", "one push a minute", None, 60.0),
    Push("tv-0001", 7, NOW_MS, (b"sealed-report-1", b"\x00\xff" * 40)),
    PushAck(7, 42, 60.0),
    Pull("tv-0001", 8, NOW_MS, 41, "eu-west", ("m1", "m:2"), b"\x02" * 32),
    PullResp(
        42,
        (("m1", (("m2", 0.5), ("m3", -0.25))), ("m2", (("m1", 0.5),)), ("m9", ())),
        (("m1", 10.0), ("m2", 0.0)),
        (("m9", 1.5), ("m1", -0.5)),
        (NewContent("m10", "A new title", EMB), NewContent("m11", "Another", EMB2)),
    ),
    Heartbeat("tv-0001", NOW_MS, 3, b"\x03" * 16),
    HeartbeatAck(42),
    ShardBatch("3f9a0c", (b"\x01" * 73, b"\x02" * 73), 0, 1),
    RegionBatch("eu-west", "b-77", (b"\x03" * 73,), 1, 2),
    BatchAck("b-77", 1, True),
    UpdateRequest(42, 3),
    GlobalUpdate(
        43,
        (("m1", (("m2", 0.9),)),),
        (("m1", 3.25),),
        (("eu-west", (("m1", 2.0), ("m2", 0.5))), ("us-east", ())),
        (NewContent("m12", "Fresh", EMB),),
        2,
        3,
        7,
        b"\x09" * 32,
    ),
    CtlRequest("tree", "shard/store"),
    CtlReply(True, {"a": (1, 2.5, "x", None, True), "b": {"c": {}}, "n": -(2**63)}),
    CtlReply(False),
    TvObserve("m1", 0.75, 1_763_700_000.25),
    TvRecommend(10, 1_763_700_000.0),
    TvRecommendReply((("m1", 0.9, "because you watched m2"), ("m3", 0.1, ""))),
    TvRecommendReply((("m1", 0.9, "because you watched m2"),), ("Heat ✓",)),
    TvImportCatalog(
        (
            CatalogEntry("m1", "Title", ("Drama", "Children's"), "A film.", 1999, 120),
            CatalogEntry("m2", "Ünïcødé title ✓", (), "", 0, 0),
        )
    ),
    TvStatus(),
    TvOk({"status": "ok", "patterns": 12}),
    TvOk(),
)

FRAMES: tuple[bytes, ...] = tuple(encode(m) for m in SAMPLES)


def test_every_message_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(MAX_FRAME)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    frame = encode(msg)
    assert len(frame) <= type(msg).MAX_BYTES
    back = decode(frame)
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == frame  # canonical: re-encoding is byte-identical
    assert type(msg).decode(frame) == msg
    assert msg.encode() == frame


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_wire_form_is_tag_version_fields(msg: Message) -> None:
    import msgpack

    raw = msgpack.unpackb(encode(msg), use_list=False)
    assert raw[0] == type(msg).TAG
    assert raw[1] == 1
    assert len(raw) == 2 + len(type(msg)._names)


def test_tags_are_unique_small_ints() -> None:
    tags = [cls.TAG for cls in MAX_FRAME]
    assert len(set(tags)) == len(tags)
    assert all(0 < t < 128 for t in tags)
