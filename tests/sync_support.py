"""Test support of the sync suite: a brain with the fast embedder, a shard service in
process (the real ``ShardService`` and state machine over the in-memory store of the
shard suite), and a hash of a brain's whole LMDB content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

from omega.brain.api import Brain, Content
from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings
from omega.federation.report import HubKey, open_report
from omega.shard import ShardService
from omega.sync.link import DeviceLink
from omega.sync.settings import ShardGroup, SyncSettings
from omega.transport import InMemoryRequester
from tests.unit.test_shard_service import DEDUP, FLEET, FakeStore, Wall, key, settings

__all__ = ["DEDUP", "FLEET", "FakeStore", "Wall", "brain_hash", "catalog", "in_process_link",
           "key", "open_brain", "opened_counts", "shard_settings", "sync_settings"]

shard_settings = settings


def catalog(n: int = 30) -> list[Content]:
    return [Content(id=f"m{i}", title=f"Title number {i}", year=1990 + i % 30,
                    genres=("Drama",)) for i in range(n)]


def open_brain(path: Path, n: int = 30) -> Brain:
    brain = Brain.open(path, BrainSettings(durability="nosync"), embedder=HashEmbedder())
    if not brain.content_ids():
        brain.add_content(catalog(n))
    return brain


def sync_settings(hub: HubKey, **kw: Any) -> SyncSettings:
    base: dict[str, Any] = {
        "enabled": True, "device_id": "tv1", "region": "local",
        "groups": (ShardGroup("g1", "local", ("tcp://127.0.0.1:9",)),),
        "hub_key_id": hub.key_id, "hub_public_key": hub.public.hex(),
        "interval_s": 1.0, "backoff_base_s": 0.1, "backoff_max_s": 1.0,
        "crowd_refresh_s": 0.0,  # every sync pulls (the refresh has its own test)
    }
    base.update(kw)
    return SyncSettings(**base)


def in_process_link(svc: ShardService, device_id: str = "tv1") -> DeviceLink:
    from omega.client import ClientSettings

    req = InMemoryRequester(svc.handle, svc.on_error)
    return DeviceLink(ShardGroup("g1", "local", ("inproc://unused",)), device_id,
                      key(device_id), ClientSettings(attempts=3, backoff_s=0.0),
                      requester=req)


def opened_counts(blobs: Iterable[bytes], hub: HubKey) -> tuple[int, int]:
    """(real, dummy) among sealed reports, opened with the hub's private key."""
    real = dummy = 0
    for blob in blobs:
        if open_report({hub.key_id: hub}, blob).coview is None:
            dummy += 1
        else:
            real += 1
    return real, dummy


def brain_hash(data_dir: Path) -> str:
    """SHA-256 over every named LMDB database of a closed brain, key and value."""
    env = lmdb.open(str(data_dir / "memory"), readonly=True, lock=False, max_dbs=64,
                    subdir=True)
    h = hashlib.sha256()
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                h.update(b"db:" + name)
                for k, v in txn.cursor():
                    h.update(len(k).to_bytes(4, "big") + bytes(k))
                    h.update(len(v).to_bytes(4, "big") + bytes(v))
    finally:
        env.close()
    return h.hexdigest()
