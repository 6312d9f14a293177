"""Device keys, signatures, timestamp windows and sequence numbers."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import threading

import pytest
from test_protocol_samples import NOW_MS

from omega.protocol import (
    HEARTBEAT_MAC_BYTES,
    MAC_BYTES,
    BadRequest,
    Health,
    Heartbeat,
    Pull,
    Push,
    ReplayGuard,
    Stale,
    Unauthorized,
    classify_sequence,
    decode,
    derive_device_key,
    encode,
    sign,
    signed_payload,
    verify,
)

FLEET = bytes(range(32))
WINDOW = 300_000
KEY = derive_device_key(FLEET, "tv-1")


def push(**change: object) -> Push:
    base = Push("tv-1", 5, NOW_MS, (b"report-a", b"report-b"))
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


SIGNED = [
    push(),
    Pull("tv-1", 6, NOW_MS, 40, "eu-west", ("m1",)),
    Heartbeat("tv-1", NOW_MS, 0),
]


def over_wire(msg: Push | Pull | Heartbeat) -> Push | Pull | Heartbeat:
    back = decode(encode(msg), (Push, Pull, Heartbeat))
    assert isinstance(back, Push | Pull | Heartbeat)
    return back


def test_device_key_is_hmac_of_the_device_id() -> None:
    assert hmac.new(FLEET, b"tv-1", hashlib.sha256).digest() == KEY
    assert len(KEY) == 32
    assert derive_device_key(FLEET, "tv-2") != KEY
    assert derive_device_key(bytes(32), "tv-1") != KEY
    with pytest.raises(BadRequest):
        derive_device_key(b"short", "tv-1")
    with pytest.raises(BadRequest):
        derive_device_key(FLEET, "tv 1")
    with pytest.raises(BadRequest):
        derive_device_key("not bytes" * 4, "tv-1")  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", SIGNED, ids=lambda m: type(m).__name__)
def test_signed_message_verifies_after_the_wire(msg: Push | Pull | Heartbeat) -> None:
    signed = sign(msg, KEY)
    assert msg.sig == b""  # the original is untouched
    expected_len = HEARTBEAT_MAC_BYTES if isinstance(msg, Heartbeat) else MAC_BYTES
    assert len(signed.sig) == expected_len
    verify(over_wire(signed), KEY, NOW_MS, WINDOW)
    # The MAC is HMAC-SHA256 over the message encoded with an empty sig.
    full = hmac.new(KEY, encode(msg), hashlib.sha256).digest()
    assert signed.sig == full[:expected_len]
    assert signed_payload(signed) == encode(msg)
    # Signing is deterministic and ignores a previous signature.
    assert sign(signed, KEY) == signed


def test_signed_heartbeat_fits_64_bytes() -> None:
    hb = sign(Heartbeat("d" * 31, NOW_MS, 127), KEY)
    assert len(encode(hb)) <= 64


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda s: dataclasses.replace(s, seq=s.seq + 1), id="seq changed"),
        pytest.param(lambda s: dataclasses.replace(s, ts_ms=s.ts_ms + 1), id="ts changed"),
        pytest.param(lambda s: dataclasses.replace(s, reports=s.reports[:1]), id="body changed"),
        pytest.param(lambda s: dataclasses.replace(s, device_id="tv-2"), id="device changed"),
        pytest.param(
            lambda s: dataclasses.replace(s, sig=bytes([s.sig[0] ^ 1]) + s.sig[1:]), id="bit flip"
        ),
        pytest.param(lambda s: dataclasses.replace(s, sig=s.sig[:16]), id="truncated mac"),
        pytest.param(lambda s: dataclasses.replace(s, sig=b""), id="unsigned"),
        pytest.param(lambda s: sign(push(), derive_device_key(FLEET, "tv-2")), id="other key"),
        pytest.param(
            lambda s: sign(push(), derive_device_key(bytes(32), "tv-1")), id="other fleet"
        ),
    ],
)
def test_forgeries_are_unauthorized(forged: object) -> None:
    signed = sign(push(), KEY)
    msg = forged(signed)  # type: ignore[operator]
    with pytest.raises(Unauthorized) as info:
        verify(over_wire(msg), KEY, NOW_MS, WINDOW)
    assert type(info.value) is Unauthorized
    assert info.value.code == "unauthorized"


def test_stale_and_future_timestamps() -> None:
    for ts in (NOW_MS - WINDOW, NOW_MS + WINDOW, NOW_MS):
        verify(sign(push(ts_ms=ts), KEY), KEY, NOW_MS, WINDOW)  # edges accepted
    for ts in (NOW_MS - WINDOW - 1, NOW_MS + WINDOW + 1, 0):
        with pytest.raises(Stale) as info:
            verify(over_wire(sign(push(ts_ms=ts), KEY)), KEY, NOW_MS, WINDOW)
        assert info.value.code == "stale"
        assert isinstance(info.value, Unauthorized)
    # Said the way a person reads it: ten minutes old is "10 min in the past".
    with pytest.raises(Stale, match="10 min in the past"):
        verify(sign(push(ts_ms=NOW_MS - 600_000), KEY), KEY, NOW_MS, WINDOW)
    with pytest.raises(Stale, match="5 min in the future"):
        verify(sign(push(ts_ms=NOW_MS + WINDOW + 4_200), KEY), KEY, NOW_MS, WINDOW)
    # The MAC is checked first: a forged old message is unauthorized, not stale.
    old = sign(push(ts_ms=0), derive_device_key(FLEET, "tv-2"))
    with pytest.raises(Unauthorized) as forged:
        verify(old, KEY, NOW_MS, WINDOW)
    assert type(forged.value) is Unauthorized


def test_only_device_messages_are_signed() -> None:
    with pytest.raises(BadRequest):
        sign(Health(), KEY)  # type: ignore[type-var]
    with pytest.raises(BadRequest):
        sign(push(), b"short")


def test_classify_sequence() -> None:
    assert classify_sequence(0, None) == "new"
    assert classify_sequence(6, 5) == "new"
    assert classify_sequence(1000, 5) == "new"  # gaps are fine
    assert classify_sequence(5, 5) == "retry"
    assert classify_sequence(4, 5) == "replay"
    assert classify_sequence(0, 5) == "replay"


def test_replayed_push_is_classified_replay_after_verify() -> None:
    guard = ReplayGuard()
    first = over_wire(sign(push(seq=10), KEY))
    verify(first, KEY, NOW_MS, WINDOW)
    assert guard.admit("tv-1", first.seq) == "new"
    # The same signed frame again: authentic, but a retry of the acknowledged push.
    again = over_wire(sign(push(seq=10), KEY))
    verify(again, KEY, NOW_MS, WINDOW)
    assert guard.admit("tv-1", again.seq) == "retry"
    assert guard.admit("tv-1", 9) == "replay"
    assert guard.admit("tv-1", 11) == "new"
    assert guard.last_acked("tv-1") == 11


def test_replay_guard_is_bounded_lru() -> None:
    guard = ReplayGuard(capacity=3)
    for i in range(3):
        guard.record(f"tv-{i}", 10)
    assert guard.classify("tv-0", 10) == "retry"  # touches nothing
    guard.record("tv-0", 11)  # tv-0 is now the most recent
    guard.record("tv-3", 1)  # evicts the least recent: tv-1
    assert len(guard) == 3
    assert guard.last_acked("tv-1") is None
    assert guard.last_acked("tv-0") == 11
    guard.record("tv-0", 3)  # never moves backwards
    assert guard.last_acked("tv-0") == 11
    with pytest.raises(ValueError):
        ReplayGuard(capacity=0)


def test_replay_guard_admits_each_sequence_once_across_threads() -> None:
    guard = ReplayGuard()
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        for seq in range(200):
            verdict = guard.admit("tv-1", seq)
            with lock:
                results.append((seq, verdict))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 800
    # No sequence number was admitted as new twice (admit is atomic).
    news = [seq for seq, verdict in results if verdict == "new"]
    assert len(news) == len(set(news))
    assert guard.last_acked("tv-1") == 199
