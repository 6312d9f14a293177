"""DeviceKeys: the per-device HMACs, derived once per device in a bounded LRU."""

from __future__ import annotations

import threading

from omega.protocol import derive_device_key
from omega.shard.validate import DeviceKeys, device_hash

FLEET = b"fleet-key-0123456789abcdef"
DEDUP = b"dedup-secret-0123456789abcdef"


def test_keys_are_the_derived_ones_and_cached() -> None:
    keys = DeviceKeys(FLEET, DEDUP, size=4)
    assert keys.get("tv-1") == (derive_device_key(FLEET, "tv-1"), device_hash(DEDUP, "tv-1"))
    assert keys.get("tv-1") == keys.get("tv-1")
    assert keys.get("tv-2") != keys.get("tv-1")
    assert keys.info() == {"hits": 3, "misses": 2, "size": 2}


def test_cache_is_bounded_and_evicted_ids_derive_again() -> None:
    keys = DeviceKeys(FLEET, DEDUP, size=3)
    for i in range(10):
        keys.get(f"tv-{i}")
    assert keys.info()["size"] == 3
    assert keys.get("tv-0") == (derive_device_key(FLEET, "tv-0"), device_hash(DEDUP, "tv-0"))
    assert keys.info()["misses"] == 11


def test_threads_get_the_same_keys() -> None:
    keys = DeviceKeys(FLEET, DEDUP, size=16)
    want = {f"tv-{i}": (derive_device_key(FLEET, f"tv-{i}"), device_hash(DEDUP, f"tv-{i}"))
            for i in range(32)}
    bad: list[str] = []

    def run() -> None:
        for _ in range(20):
            for d, k in want.items():
                if keys.get(d) != k:
                    bad.append(d)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert bad == [] and keys.info()["size"] <= 16
