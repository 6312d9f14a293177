"""Micro-benchmark of omega.protocol: encode, decode, sign, verify (µs per op).

Run: .venv/bin/python bench/protocol.py [--n 20000]

Messages: a Push near its 1 KB limit (8 sealed reports) and a ~5 KB PullResp (the
typical incremental pull: neighbour lists, popularity, trends, two new titles).
"""

from __future__ import annotations

import argparse
import hmac
import os
import time
from collections.abc import Callable

import msgpack
import numpy as np

from omega.protocol import (
    Heartbeat,
    NewContent,
    PullResp,
    Push,
    decode,
    derive_device_key,
    embedding_to_wire,
    encode,
    sign,
    verify,
)

NOW_MS = 1_763_700_000_000


def sample_push() -> Push:
    rng = np.random.default_rng(1)
    reports = tuple(rng.bytes(104) for _ in range(8))
    return Push("tv-00000000000000000001", 123_456, NOW_MS, reports)


def sample_pull_resp() -> PullResp:
    rng = np.random.default_rng(2)
    titles = [f"title-{i:05d}" for i in range(400)]
    neighbours = tuple(
        (titles[i], tuple((titles[(i + j + 1) % 400], float(rng.random())) for j in range(20)))
        for i in range(6)
    )
    popularity = tuple((titles[i], float(rng.random() * 100)) for i in range(24))
    trends = tuple((titles[i], float(rng.normal())) for i in range(12))
    new = tuple(
        NewContent(f"new-{i}", f"A new title {i}", embedding_to_wire(rng.normal(size=384) / 20))
        for i in range(2)
    )
    return PullResp(42, neighbours, popularity, trends, new)


def per_op_us(fn: Callable[[], object], n: int) -> float:
    # CPU time, best of 5: the machine is shared, wall time would count other work.
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000, help="iterations per measurement")
    args = parser.parse_args()
    key = derive_device_key(os.urandom(32), "tv-00000000000000000001")

    def mac(data: bytes) -> bytes:
        return hmac.digest(key, data, "sha256")

    push = sign(sample_push(), key)
    resp = sample_pull_resp()
    push_frame = encode(push)
    resp_frame = encode(resp)
    print(f"Push frame {len(push_frame)} B, PullResp frame {len(resp_frame)} B")

    def push_round_trip() -> None:
        msg = decode(encode(sign(push, key)), (Push,))
        assert isinstance(msg, Push)
        verify(msg, key, NOW_MS, 300_000)

    hb = Heartbeat("tv-00000000000000000001", NOW_MS, 0)

    def hb_round_trip() -> None:
        msg = decode(encode(sign(hb, key)), (Heartbeat,))
        assert isinstance(msg, Heartbeat)
        verify(msg, key, NOW_MS, 300_000)

    rows = [
        ("(reference) msgpack.unpackb Push", lambda: msgpack.unpackb(push_frame), args.n),
        ("(reference) msgpack.unpackb PullResp", lambda: msgpack.unpackb(resp_frame), args.n // 4),
        ("Push encode", lambda: encode(push), args.n),
        ("Push decode", lambda: decode(push_frame), args.n),
        ("Push sign", lambda: sign(push, key), args.n),
        ("Push verify", lambda: verify(push, key, NOW_MS, 300_000), args.n),
        ("Push sign+encode+decode+verify", push_round_trip, args.n),
        ("Heartbeat sign+encode+decode+verify", hb_round_trip, args.n),
        ("PullResp encode", lambda: encode(resp), args.n // 4),
        ("PullResp decode", lambda: decode(resp_frame), args.n // 4),
        ("PullResp construct (validate)", lambda: PullResp(*resp.__dict__.values()), args.n // 4),
        ("PullResp encode+decode", lambda: decode(encode(resp)), args.n // 4),
        # PullResp is not signed (shard -> TV; TLS in production). What a MAC would add:
        ("PullResp 2x HMAC of frame", lambda: (mac(resp_frame), mac(resp_frame)), args.n // 4),
    ]
    for name, fn, n in rows:
        print(f"{name:34s} {per_op_us(fn, n):8.2f} µs/op")


if __name__ == "__main__":
    main()
