"""The hub's key announcements through a real 3-replica shard group to the real
``SyncCore`` (over ``DeviceLink``, provisioned by ``omega.sync.provision`` with the
hub's verify key).

Releases carrying a key announcement are put into the shard as a hostile shard
operator could (``shard_node.py``'s ``global announce:...``): a key signed by
anyone but the hub is refused while the release itself merges; the hub's signed
next key is adopted; a replay of the hub's older announcement does not roll the
TV back. Then the shard's stored reports open only with the hub's current key.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from omega.brain.api import Brain, Content, ViewingEvent
from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings
from omega.client import ClientSettings
from omega.federation.keysign import HubSigner
from omega.federation.report import HubKey, UnopenableReport, open_report, report_key_id
from omega.protocol import CtlReply, CtlRequest, decode, encode
from omega.sync.core import SyncCore
from omega.sync.link import DeviceLink, device_key_from_secret
from omega.sync.provision import provision
from omega.sync.settings import ShardGroup
from omega.transport import RpcClient, TransportSettings
from tests.integration.shard_harness import FLEET_KEY, ShardCluster, cluster
from tests.nodeproc import wait_for
from tests.sync_support import opened_counts

pytestmark = [pytest.mark.slow]

T0 = 1_700_000_000.0


def announce(c: ShardCluster, version: int, key: HubKey, signer: HubSigner) -> None:
    """A release ``version`` at the shard leader naming ``key``, signed by ``signer``."""
    sig = signer.sign(key.key_id, key.public)
    target = f"announce:{version}:{key.key_id}:{key.public.hex()}:{sig.hex()}"
    lead = c.wait_leader()
    with RpcClient(lead.control, TransportSettings(request_timeout_s=10.0, retries=0)) as rpc:
        reply = decode(rpc.request(encode(CtlRequest("global", target)), timeout_s=10.0))
    assert isinstance(reply, CtlReply) and reply.ok, reply
    assert isinstance(reply.payload, dict) and reply.payload["result"][0] == "applied", reply


def open_tv(root: Path, c: ShardCluster, hub: HubKey, verify_key: bytes) -> tuple[Brain, SyncCore]:
    grp = ShardGroup("g1", "local", tuple(c.endpoints))
    prov = provision(root / "tv", device_id="tv-key", region="local", groups=[grp], hub=hub,
                     hub_verify_key=verify_key, fleet_key=FLEET_KEY)
    device_key = device_key_from_secret(prov.key_file.read_bytes(), str(prov.key_file))
    brain = Brain.open(root / "tv" / "data", BrainSettings(durability="nosync"),
                       embedder=HashEmbedder())
    brain.add_content([Content(f"m{i}", f"Film {i}") for i in range(12)])

    def connect(g: ShardGroup) -> DeviceLink:
        return DeviceLink(g, "tv-key", device_key, ClientSettings(
            request_timeout_s=2.0, call_timeout_s=30.0, attempts=20, backoff_s=0.05,
            backoff_max_s=0.5, wait_rate_limit_max_s=5.0))

    settings = dataclasses.replace(prov.settings, crowd_refresh_s=0.0)  # every sync pulls
    return brain, SyncCore(brain, settings, connect, rng=random.Random(3))


def synced_to(core: SyncCore, version_at_least: int) -> dict[str, Any] | None:
    out = core.sync()
    st = core.status()
    return st if not out.error and st["global_version"] >= version_at_least else None


def test_a_forged_hub_key_is_refused_a_signed_one_adopted_a_replay_ignored(
        tmp_path: Path) -> None:
    signer = HubSigner.generate()  # the hub's
    k1, k2 = HubKey.generate(1), HubKey.generate(2)
    shard_key = HubKey.generate(2)  # the hostile shard's own key pair, under the next id
    (tmp_path / "shard").mkdir()
    with cluster(tmp_path / "shard", launcher="runner", shard={"k_anonymity": 2}) as c:
        c.start()
        brain, core = open_tv(tmp_path, c, k1, signer.verify_key)
        try:
            # 1. A release naming the shard's key, signed by the shard's own signer.
            announce(c, 1, shard_key, HubSigner.generate())
            st = wait_for(lambda: synced_to(core, 1), 30, "release 1 merged")
            assert core.hub_key() == k1.public_only()
            assert st["hub_key_refused"] >= 1, st
            assert st["hub_key_refusal"].startswith("bad_signature"), st
            assert brain.status()["crowd_version"] == st["global_version"]  # the pull stood
            # 2. The hub's next key, signed by the hub: adopted.
            announce(c, 2, k2, signer)
            v1 = st["global_version"]
            wait_for(lambda: synced_to(core, v1 + 1), 30, "release 2 merged")
            assert core.hub_key() == k2.public_only()
            refused = core.status()["hub_key_refused"]
            # 3. The hub's genuine announcement of key 1, replayed: no rollback.
            announce(c, 3, k1, signer)
            v2 = core.status()["global_version"]
            st = wait_for(lambda: synced_to(core, v2 + 1), 30, "release 3 merged")
            assert core.hub_key() == k2.public_only()
            assert st["hub_key_stale"] >= 1 and st["hub_key_refused"] == refused, st
            # Views now: sealed to the hub's key 2 and stored at the shard.
            for j, cid in enumerate(["m1", "m2"]):
                brain.observe(ViewingEvent(cid, 1.0, T0 + 60 * j))
            out = core.sync()
            assert not out.error and out.pushed == 1, out
        finally:
            core.close()
            brain.close()
        c.stop()
        for node in c.nodes:
            blobs = node.offline().reports
            assert sum(blobs.values()) >= 8
            # Every report opens with the hub's keys (dummies of the first syncs with key 1,
            # the rest with key 2); the one real report is sealed to key 2; none opens
            # with the shard's key.
            by_key: dict[int, list[bytes]] = {1: [], 2: []}
            for blob in blobs:
                by_key[report_key_id(blob)].append(blob)
            assert opened_counts(by_key[1], k1) == (0, len(by_key[1])), node.name
            assert opened_counts(by_key[2], k2) == (1, len(by_key[2]) - 1), node.name
            assert by_key[2]
            with pytest.raises(UnopenableReport):
                open_report({2: shard_key}, by_key[2][0])
