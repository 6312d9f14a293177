"""Every validation rule rejects what it should, in Python and on the wire, with the
right error class and code; what it accepts is normalized losslessly."""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from test_protocol_samples import EMB, FRAMES, NOW_MS, SAMPLES

from omega.protocol import (
    ERROR_CODES,
    MAX_FRAME_BYTES,
    BadRequest,
    BatchAck,
    CatalogEntry,
    CtlReply,
    CtlRequest,
    ErrorReply,
    GlobalUpdate,
    Health,
    HealthReply,
    Heartbeat,
    NewContent,
    NotLeaderError,
    ProtocolError,
    Pull,
    PullResp,
    Push,
    RateLimited,
    RegionBatch,
    ShardBatch,
    Stale,
    TooLarge,
    TvImportCatalog,
    TvObserve,
    TvOk,
    TvRecommend,
    TvRecommendReply,
    Unauthorized,
    Unavailable,
    UnknownType,
    VersionMismatch,
    decode,
    embedding_from_wire,
    embedding_to_wire,
    encode,
    error_class,
    max_frame_for,
)


def wire(tag: int, *fields: Any, version: Any = 1) -> bytes:
    """A hand-made frame, bypassing every check of the encoder."""
    return msgpack.packb([tag, version, *fields], use_bin_type=True)


def push_fields(**change: Any) -> list[Any]:
    fields = {"device_id": "tv-1", "seq": 1, "ts_ms": NOW_MS, "reports": [b"r"], "sig": b""}
    fields.update(change)
    return list(fields.values())


def f16(values: list[int]) -> bytes:
    """Raw float16 bit patterns, padded to 384 values with zeros."""
    return struct.pack("<384H", *(values + [0] * (384 - len(values))))


def rejects(exc: type[ProtocolError], code: str, fn: Callable[[], object]) -> ProtocolError:
    with pytest.raises(exc) as info:
        fn()
    assert info.value.code == code
    return info.value


# --- field rules, in Python ------------------------------------------------------


BAD_CONSTRUCTIONS: list[tuple[str, Callable[[], object], type[ProtocolError]]] = [
    # bool is not an int, nor a float
    ("seq bool", lambda: Push("tv-1", True, NOW_MS, ()), BadRequest),
    ("health bool", lambda: Heartbeat("tv-1", NOW_MS, False), BadRequest),
    ("fraction bool", lambda: TvObserve("m1", True, 1.0), BadRequest),
    ("ok int", lambda: CtlReply(1), BadRequest),  # type: ignore[arg-type]
    ("score bool", lambda: PullResp(1, (), (("m1", True),)), BadRequest),
    ("report not bytes", lambda: ShardBatch("b1", ("r",)), BadRequest),  # type: ignore[arg-type]
    # ranges
    ("seq negative", lambda: Push("tv-1", -1, NOW_MS, ()), BadRequest),
    ("seq over 2^63", lambda: Push("tv-1", 2**63, NOW_MS, ()), BadRequest),
    ("health 128", lambda: Heartbeat("tv-1", NOW_MS, 128), BadRequest),
    ("fraction > 1", lambda: TvObserve("m1", 1.01, 1.0), BadRequest),
    ("k 0", lambda: TvRecommend(0, 1.0), BadRequest),
    ("k 101", lambda: TvRecommend(101, 1.0), BadRequest),
    ("popularity negative", lambda: PullResp(1, (), (("m1", -1.0),)), BadRequest),
    ("part >= parts", lambda: GlobalUpdate(1, part=2, parts=2), BadRequest),
    ("parts 0", lambda: ShardBatch("b1", (b"r",), parts=0), BadRequest),
    ("key id over u32", lambda: GlobalUpdate(1, hub_key_id=2**32), BadRequest),
    ("year", lambda: CatalogEntry("m1", "t", (), "", 10000, 0), BadRequest),
    # NaN and infinity
    ("fraction nan", lambda: TvObserve("m1", math.nan, 1.0), BadRequest),
    ("uptime inf", lambda: HealthReply("hub", "h", "ok", math.inf, "1"), BadRequest),
    ("popularity nan", lambda: PullResp(1, (), (("m1", 1.0), ("m2", math.nan))), BadRequest),
    ("neighbour -inf", lambda: PullResp(1, (("m1", (("m2", -math.inf),)),)), BadRequest),
    ("trend huge", lambda: PullResp(1, trends=(("m1", 1e300),)), BadRequest),
    ("retry nan", lambda: ErrorReply("unavailable", "x", None, math.nan), BadRequest),
    ("score nan", lambda: TvRecommendReply((("m1", math.nan, ""),)), BadRequest),
    # embeddings: exactly 384 float16, finite
    ("emb 383 dims", lambda: NewContent("m1", "t", EMB[:-2]), BadRequest),
    ("emb 385 dims", lambda: NewContent("m1", "t", EMB + b"\x00\x00"), BadRequest),
    ("emb odd bytes", lambda: NewContent("m1", "t", EMB[:-1]), BadRequest),
    ("emb NaN", lambda: NewContent("m1", "t", f16([0x3C00, 0x7E00])), BadRequest),
    ("emb +inf", lambda: NewContent("m1", "t", f16([0x7C00])), BadRequest),
    ("emb -inf", lambda: NewContent("m1", "t", f16([0, 0, 0xFC00])), BadRequest),
    ("emb not bytes", lambda: NewContent("m1", "t", "x" * 768), BadRequest),  # type: ignore[arg-type]
    # identifiers and strings
    ("device id 32 chars", lambda: Push("t" * 32, 1, NOW_MS, ()), BadRequest),
    ("device id space", lambda: Push("tv 1", 1, NOW_MS, ()), BadRequest),
    ("device id empty", lambda: Push("", 1, NOW_MS, ()), BadRequest),
    ("device id unicode", lambda: Push("tv-é", 1, NOW_MS, ()), BadRequest),
    ("content id 65", lambda: TvObserve("m" * 65, 0.5, 1.0), BadRequest),
    ("content id slash", lambda: TvObserve("m/1", 0.5, 1.0), BadRequest),
    ("want bad id", lambda: Pull("tv-1", 1, NOW_MS, 0, "eu", ("ok", "no way")), BadRequest),
    ("neighbour bad id", lambda: PullResp(1, (("m1", (("m 2", 1.0),)),)), BadRequest),
    ("title too long", lambda: NewContent("m1", "t" * 257, EMB), TooLarge),
    ("title empty", lambda: NewContent("m1", "", EMB), BadRequest),
    ("message too long", lambda: ErrorReply("bad_request", "x" * 257), TooLarge),
    ("reason too long", lambda: TvRecommendReply((("m1", 1.0, "r" * 129),)), TooLarge),
    ("title too long", lambda: TvRecommendReply((("m1", 1.0, ""),), ("t" * 257,)), TooLarge),
    ("leader with space", lambda: ErrorReply("not_leader", "x", "tcp://a b"), BadRequest),
    ("unknown error code", lambda: ErrorReply("teapot", "x"), BadRequest),
    ("command with space", lambda: CtlRequest("a b"), BadRequest),
    ("id not str", lambda: TvObserve(1, 0.5, 1.0), BadRequest),  # type: ignore[arg-type]
    # lists: counts, shapes, duplicates
    ("9 reports", lambda: Push("tv-1", 1, NOW_MS, (b"r",) * 9), TooLarge),
    ("empty report", lambda: Push("tv-1", 1, NOW_MS, (b"",)), BadRequest),
    ("report not bytes", lambda: Push("tv-1", 1, NOW_MS, ("r",)), BadRequest),  # type: ignore[arg-type]
    (
        "17 wanted",
        lambda: Pull("tv-1", 1, NOW_MS, 0, "eu", tuple(f"m{i}" for i in range(17))),
        TooLarge,
    ),
    ("duplicate wanted", lambda: Pull("tv-1", 1, NOW_MS, 0, "eu", ("m1", "m1")), BadRequest),
    (
        "101 neighbours",
        lambda: PullResp(1, (("m1", tuple((f"n{i}", 1.0) for i in range(101))),)),
        TooLarge,
    ),
    ("duplicate title", lambda: PullResp(1, (("m1", ()), ("m1", ()))), BadRequest),
    ("duplicate neighbour", lambda: PullResp(1, (("m1", (("m2", 1.0), ("m2", 2.0))),)), BadRequest),
    ("duplicate popularity", lambda: PullResp(1, (), (("m1", 1.0), ("m1", 2.0))), BadRequest),
    ("row too short", lambda: PullResp(1, (), (("m1",),)), BadRequest),
    ("row too long", lambda: PullResp(1, (), (("m1", 1.0, 2.0),)), BadRequest),
    ("row is a str", lambda: PullResp(1, (), ("ab",)), BadRequest),
    ("rows not a list", lambda: PullResp(1, (), "m1"), BadRequest),  # type: ignore[arg-type]
    ("empty report", lambda: RegionBatch("eu", "b1", (b"",)), BadRequest),
    ("report over 1000 bytes", lambda: ShardBatch("b1", (b"x" * 1001,)), TooLarge),
    ("2049 reports", lambda: ShardBatch("b1", (b"x",) * 2049), TooLarge),
    ("public key 33 bytes", lambda: PullResp(1, hub_key_id=1, hub_public_key=b"k" * 33), TooLarge),
    ("bad batch id", lambda: BatchAck("b 1"), BadRequest),
    (
        "65 new titles",
        lambda: PullResp(1, new_content=tuple(NewContent(f"m{i}", "t", EMB) for i in range(65))),
        TooLarge,
    ),
    (
        "duplicate new id",
        lambda: PullResp(1, new_content=(NewContent("m1", "t", EMB), NewContent("m1", "u", EMB))),
        BadRequest,
    ),
    ("catalog row short", lambda: TvImportCatalog((("m1", "t", (), "", 1999),)), BadRequest),
    ("17 genres", lambda: CatalogEntry("m1", "t", ("g",) * 17, "", 0, 0), TooLarge),
    (
        "101 recommendations",
        lambda: TvRecommendReply(tuple((f"m{i}", 1.0, "") for i in range(101))),
        TooLarge,
    ),
    # JSON-like payloads
    ("payload bytes", lambda: TvOk(b"x"), BadRequest),  # type: ignore[arg-type]
    ("payload nan", lambda: TvOk({"x": math.nan}), BadRequest),
    ("payload int key", lambda: TvOk({1: 2}), BadRequest),  # type: ignore[dict-item]
    ("payload too deep", lambda: TvOk(_nest(17)), BadRequest),
    ("payload set", lambda: CtlReply(True, {1, 2}), BadRequest),  # type: ignore[arg-type]
    ("payload int too big", lambda: CtlReply(True, 2**64), BadRequest),
]


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("name", "build", "exc"), BAD_CONSTRUCTIONS, ids=[c[0] for c in BAD_CONSTRUCTIONS]
)
def test_construction_rejects(
    name: str, build: Callable[[], object], exc: type[ProtocolError]
) -> None:
    with pytest.raises(exc) as info:
        build()
    assert type(info.value) is exc  # not a coarser or finer class than expected
    assert info.value.code == exc.code
    assert info.value.message  # names the field and the reason


def test_error_names_the_field() -> None:
    err = rejects(BadRequest, "bad_request", lambda: Push("tv-1", 1, -5, ()))
    assert "Push.ts_ms" in err.message
    err = rejects(
        BadRequest,
        "bad_request",
        lambda: TvImportCatalog((CatalogEntry("m1", "t", (), "", 0, 0), ("m2",))),
    )
    assert "TvImportCatalog.items" in err.message


def test_depth_16_payload_is_accepted() -> None:
    msg = TvOk(_nest(15))
    assert decode(encode(msg)) == msg


def test_normalization_is_lossless() -> None:
    msg = Push("tv-1", 1, NOW_MS, [bytearray(b"ab")])  # type: ignore[arg-type]
    assert msg.reports == (b"ab",) and type(msg.reports[0]) is bytes
    obs = TvObserve("m1", 1, 5)
    assert obs.watch_fraction == 1.0 and type(obs.watch_fraction) is float
    assert type(obs.timestamp) is float
    resp = PullResp(1, [["m1", [["m2", 1]]]], [["m1", 2]])  # type: ignore[list-item]
    assert resp.neighbours == (("m1", (("m2", 1.0),)),)
    assert type(resp.neighbours[0][1][0][1]) is float
    assert resp.popularity == (("m1", 2.0),)
    cat = TvImportCatalog([["m1", "t", ["g"], "", 1, 2]])  # type: ignore[list-item]
    assert cat.items == (CatalogEntry("m1", "t", ("g",), "", 1, 2),)
    payload = {"a": [1, {"b": [2]}]}
    reply = CtlReply(True, payload)
    assert reply.payload == {"a": (1, {"b": (2,)})}
    payload["a"].append(3)  # type: ignore[attr-defined]
    assert reply.payload == {"a": (1, {"b": (2,)})}  # the message holds its own copy


def test_messages_are_frozen_and_hashable() -> None:
    msg = Push("tv-1", 1, NOW_MS, (b"r",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.seq = 2  # type: ignore[misc]
    assert hash(msg) == hash(Push("tv-1", 1, NOW_MS, (b"r",)))
    assert hash(CtlReply(True, {"a": 1})) == hash(CtlReply(True, {"b": 2}))  # payload unhashed
    replaced = dataclasses.replace(msg, seq=3)
    assert replaced.seq == 3
    with pytest.raises(BadRequest):
        dataclasses.replace(msg, seq=-3)


def test_encode_enforces_the_frame_limit() -> None:
    big = Push("tv-1", 1, NOW_MS, (b"x" * 200,) * 8)  # fields valid, frame > 1 KB
    err = rejects(TooLarge, "too_large", lambda: encode(big))
    assert "1024" in err.message
    with pytest.raises(UnknownType):
        encode(object())  # type: ignore[arg-type]


def test_heartbeat_fits_64_bytes_at_its_largest() -> None:
    hb = Heartbeat("d" * 31, 2**63 - 1, 127, b"\xff" * 16)
    assert len(encode(hb)) <= 64


def test_push_limit_is_what_the_wire_allows() -> None:
    # A Push with 4 reports of 200 bytes fits; the limit is on the whole frame.
    ok = Push("tv-0123456789012345678901234567", 2**63 - 1, 2**63 - 1, (b"x" * 200,) * 4, b"s" * 32)
    assert len(encode(ok)) <= 1024


# --- the same rules on the wire --------------------------------------------------


WIRE_CASES: list[tuple[str, bytes, type[ProtocolError]]] = [
    ("wrong version", wire(10, *push_fields(), version=2), VersionMismatch),
    ("version 0", wire(10, *push_fields(), version=0), VersionMismatch),
    ("version bool", wire(10, *push_fields(), version=True), VersionMismatch),
    ("version str", wire(10, *push_fields(), version="1"), VersionMismatch),
    ("no version", msgpack.packb([1]) + b"", BadRequest),
    ("unknown tag", wire(99), UnknownType),
    ("tag zero", wire(0), UnknownType),
    ("tag is uint8", b"\x92\xcc\x0a\x01", UnknownType),
    ("tag is a str", msgpack.packb(["Push", 1]), UnknownType),
    ("not an array", msgpack.packb({"tag": 10}), BadRequest),
    ("a bare int", msgpack.packb(10), BadRequest),
    ("empty frame", b"", BadRequest),
    ("header only", b"\x92", BadRequest),
    ("trailing byte", FRAMES[4] + b"\x00", BadRequest),
    ("two messages", FRAMES[4] + FRAMES[4], BadRequest),
    ("truncated", FRAMES[4][:-1], BadRequest),
    ("too few fields", wire(10, "tv-1", 1, NOW_MS, [b"r"]), BadRequest),
    ("too many fields", wire(10, *push_fields(), b""), BadRequest),
    ("seq bool", wire(10, *push_fields(seq=True)), BadRequest),
    ("seq float", wire(10, *push_fields(seq=1.0)), BadRequest),
    ("seq negative", wire(10, *push_fields(seq=-1)), BadRequest),
    ("seq 2^64-1", wire(10, *push_fields(seq=2**64 - 1)), BadRequest),
    ("device id as bytes", wire(10, *push_fields(device_id=b"tv-1")), BadRequest),
    ("device id too long", wire(10, *push_fields(device_id="d" * 32)), BadRequest),
    ("report as str", wire(10, *push_fields(reports=["r"])), BadRequest),
    ("reports as map", wire(10, *push_fields(reports={"a": b"r"})), BadRequest),
    ("9 reports", wire(10, *push_fields(reports=[b"r"] * 9)), TooLarge),
    ("sig 33 bytes", wire(10, *push_fields(sig=b"s" * 33)), TooLarge),
    ("invalid utf-8", b"\x97\x0a\x01\xa2\xff\xfe\x01\x01\x90\xc4\x00", BadRequest),
    ("ext type", wire(10, *push_fields(reports=[msgpack.ExtType(1, b"r")])), BadRequest),
    ("timestamp ext", wire(10, *push_fields(ts_ms=msgpack.Timestamp(1, 0))), BadRequest),
    ("empty ext", b"\x97\x0a\x01\xa4tv-1\x01\x01\x91\xc7\x00\x05\xc4\x00", BadRequest),
    ("nil in int", wire(10, *push_fields(seq=None)), BadRequest),
    ("float32 nan", b"\x94\x28\x01\xa2m1" + b"\xca" + struct.pack(">f", math.nan), BadRequest),
    ("float64 inf", wire(40, "m1", 0.5, math.inf), BadRequest),
    ("fraction bool", wire(40, "m1", True, 1.0), BadRequest),
    ("embedding 767", wire(13, 1, [], [], [], [["m1", "t", EMB[:-1]]]), BadRequest),
    ("embedding NaN", wire(13, 1, [], [], [], [["m1", "t", f16([0x7E01])]]), BadRequest),
    ("record arity", wire(13, 1, [], [], [], [["m1", EMB]]), BadRequest),
    ("record as map", wire(13, 1, [], [], [], [{"id": "m1"}]), BadRequest),
    ("nested too deep", b"\x93\x2d\x01" + b"\x91" * 2000 + b"\x00", BadRequest),
    ("heartbeat 65 bytes", wire(14, "d" * 31, 2**63, 1, b"s" * 18), TooLarge),
    ("over global max", b"\xdd\x00\x00\x00\x02\x14\x01" + b"\x00" * MAX_FRAME_BYTES, TooLarge),
    ("unknown error code", wire(3, "teapot", "x", None, None), BadRequest),
    ("payload too deep", wire(45, _nest(40)), BadRequest),
    ("payload bin", wire(45, {"a": b"x"}), BadRequest),
    ("payload int key", b"\x93\x2d\x01\x81\x01\x02", BadRequest),
    ("part >= parts", wire(22, 1, [], [], [], [], 3, 3), BadRequest),
]


@pytest.mark.parametrize(("name", "frame", "exc"), WIRE_CASES, ids=[c[0] for c in WIRE_CASES])
def test_decode_rejects(name: str, frame: bytes, exc: type[ProtocolError]) -> None:
    with pytest.raises(exc) as info:
        decode(frame)
    assert type(info.value) is exc
    assert info.value.code == exc.code


def test_float_fields_accept_ints_on_the_wire() -> None:
    msg = decode(wire(40, "m1", 1, 5))
    assert msg == TvObserve("m1", 1.0, 5.0)


def test_allowed_filters_by_tag_before_decoding() -> None:
    frame = encode(Health())
    assert decode(frame, (Health, Push)) == Health()
    err = rejects(UnknownType, "unknown_type", lambda: decode(frame, (Push,)))
    assert "Health" in err.message
    with pytest.raises(UnknownType):
        Push.decode(frame)
    # The per-type limit applies once the tag is known: a 2 KB "Push" is refused unread.
    with pytest.raises(TooLarge):
        decode(b"\xdc\x00\x03\x0a\x01" + b"\xc0" * 2048)


def test_frames_of_every_buffer_type() -> None:
    frame = FRAMES[4]
    assert decode(bytearray(frame)) == SAMPLES[4]
    assert decode(memoryview(frame)) == SAMPLES[4]
    with pytest.raises(BadRequest):
        decode("not bytes")  # type: ignore[arg-type]


def test_error_reply_is_read_at_any_version() -> None:
    frame = wire(3, "version", "speak version 1", None, None, version=7)
    assert decode(frame) == ErrorReply("version", "speak version 1")
    with pytest.raises(VersionMismatch):
        decode(wire(1, version=7))


def test_maps_only_where_payloads_allow_them() -> None:
    frame = wire(45, {"a": {"b": [1, 2]}})
    assert decode(frame) == TvOk({"a": {"b": (1, 2)}})
    with pytest.raises(BadRequest):
        decode(wire(10, *push_fields(reports={})))


def test_max_frame_for() -> None:
    assert max_frame_for([Push, Heartbeat, Pull]) == 2048
    assert max_frame_for([]) == MAX_FRAME_BYTES
    assert all(limit <= MAX_FRAME_BYTES for limit in (m.MAX_BYTES for m in (Push, PullResp)))


# --- error replies ---------------------------------------------------------------


def test_error_reply_round_trips_exceptions() -> None:
    cases: list[ProtocolError] = [
        BadRequest("bad"),
        TooLarge("big"),
        Stale("old"),
        Unauthorized("who"),
        NotLeaderError("not me", leader="tcp://10.0.0.2:7001"),
        RateLimited("slow", retry_after_s=30.0),
        Unavailable("later", retry_after_s=1.5),
    ]
    for exc in cases:
        reply = ErrorReply.from_error(exc)
        assert reply.code == exc.code
        back = decode(encode(reply))
        assert isinstance(back, ErrorReply)
        err = back.to_error()
        assert type(err) is type(exc)
        assert err.message == exc.message
        assert getattr(err, "leader", None) == getattr(exc, "leader", None)
        assert getattr(err, "retry_after_s", None) == getattr(exc, "retry_after_s", None)


def test_error_reply_from_foreign_and_odd_errors() -> None:
    reply = ErrorReply.from_error(KeyError("secret internal detail"))
    assert reply.code == "unavailable" and "secret" not in reply.message
    odd = ProtocolError("x" * 1000, code="unknown_device")
    reply = ErrorReply.from_error(odd)
    assert reply.code == "bad_request" and reply.message.startswith("unknown_device")
    assert len(encode(reply)) <= ErrorReply.MAX_BYTES
    # The longest possible reply still fits its frame limit.
    worst = ErrorReply("unauthorized", "\U0001f600" * 256, "t" * 256, 1.0)
    assert len(encode(worst)) <= ErrorReply.MAX_BYTES


def test_error_codes() -> None:
    assert {
        "bad_request",
        "unauthorized",
        "rate_limited",
        "not_leader",
        "unavailable",
        "replay",
        "stale",
        "too_large",
        "unknown_type",
        "version",
    } == ERROR_CODES
    for code in ERROR_CODES:
        assert error_class(code).code == code
    assert issubclass(Stale, Unauthorized) and issubclass(TooLarge, BadRequest)


# --- vectors -----------------------------------------------------------------------


def test_embedding_quantization() -> None:
    rng = np.random.default_rng(0)
    vec = rng.normal(size=384).astype(np.float32)
    vec /= np.linalg.norm(vec)
    data = embedding_to_wire(vec)
    assert len(data) == 768
    back = embedding_from_wire(data)
    assert back.dtype == np.float32 and back.shape == (384,)
    assert np.max(np.abs(back - vec)) < 1e-3
    with pytest.raises(BadRequest):
        embedding_to_wire(vec[:100])
    with pytest.raises(BadRequest):
        embedding_to_wire(np.full(384, 1e6))  # overflows float16
    nan = vec.copy()
    nan[3] = np.nan
    with pytest.raises(BadRequest):
        embedding_to_wire(nan)
    with pytest.raises(BadRequest):
        embedding_from_wire(data[:-2])


def test_unencodable_text_is_a_bad_request() -> None:
    msg = TvObserve("m1", 0.5, 1.0)
    entry = CatalogEntry("m1", "lone \ud800 surrogate", (), "", 0, 0)  # valid str, not UTF-8
    with pytest.raises(BadRequest):
        encode(TvImportCatalog((entry,)))
    assert decode(encode(msg)) == msg  # the thread's packer recovered


def test_bytearray_reports_are_normalized_on_the_slow_path() -> None:
    msg = Push("tv-1", 1, NOW_MS, (b"a", bytearray(b"b")))  # type: ignore[arg-type]
    assert msg.reports == (b"a", b"b") and all(type(r) is bytes for r in msg.reports)
