"""Federation path benchmark: how many sealed reports per second each stage handles.

Run: .venv/bin/python bench/federation_path.py [--reports N] [--titles N] [--json]

In one process, with the real code and real stores, no network:

1. aggregator: ``ShuffleStore.receive`` of shard batch parts (LMDB, synced per
   part), then one ``mix`` and the ack of every mix part: reports/s;
2. hub ingest: opening every report (libsodium sealed boxes) and summing each
   part (``open_batch``) on one thread and on one thread per CPU (the service's
   default, ``open_threads``), then the service's whole path: opened and proposed
   as ``Ingest`` to a real one-replica ``ReplicatedLmdb`` (Raft + LMDB, journal
   synced): reports/s, and the share spent opening;
3. hub release over the ingested sums and a registry of ``--titles`` titles: the
   time from ``release()`` to the stored ``Publish`` (noise on, calibrated as for a
   fleet of a million TVs), its size, and its ``GlobalUpdate`` parts; then the next
   release (new reports, no new title): its broadcast, and the catch-up of a shard
   that missed one (the whole registry).

Figures are for a shared machine; ratios between stages of one run are what to
compare across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omega.federation import hub  # noqa: E402
from omega.federation.batches import batch_id, split_parts  # noqa: E402
from omega.federation.hubservice import HubService  # noqa: E402
from omega.federation.publish import fold, open_batch  # noqa: E402
from omega.federation.release import ReleaseSettings  # noqa: E402
from omega.federation.report import HubKey, coview, seal  # noqa: E402
from omega.federation.settings import HubSettings  # noqa: E402
from omega.federation.shuffle import ShuffleStore  # noqa: E402
from omega.protocol import BatchAck, RegionBatch, decode, encode  # noqa: E402
from omega.raft import RaftSettings, ReplicatedLmdb  # noqa: E402
from tests.nodeproc import free_port, wait_for  # noqa: E402


def make_reports(n: int, titles: list[str], key: HubKey, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(titles[: max(2, len(titles) // 10)], 2)  # a popular head
        out.append(seal(coview(a, b, 1.0), key))
    return out


def bench(n_reports: int, n_titles: int) -> dict[str, Any]:
    titles = [f"title-{i:06d}" for i in range(n_titles)]
    out: dict[str, Any] = {"reports": n_reports, "titles": n_titles}
    with tempfile.TemporaryDirectory(prefix="omega-fedbench-") as tmp:
        root = Path(tmp)
        raft = RaftSettings(self_address=f"127.0.0.1:{free_port()}", dev_mode=True)
        store = ReplicatedLmdb(raft, root / "hub", None, hub.make_apply(fold),
                               databases=hub.DATABASES)
        try:
            wait_for(store.is_leader, 30, "a one-replica hub leads")
            # Noise as for a fleet of a million TVs (the real population here is a few
            # thousand simulated ones, whose noise would publish nothing).
            release = ReleaseSettings(fleet_size=1_000_000, population=max(1, n_reports // 5))
            svc = HubService(HubSettings(), release, store)
            svc.ensure_key()
            emb = [0.01] * 384
            for i in range(0, n_titles, 2000):
                svc.add_content([{"id": t, "title": t, "embedding": emb}
                                 for t in titles[i:i + 2000]])
            key = svc.release_parts()[0]
            hub_key = HubKey(key.hub_key_id, key.hub_public_key)
            t = time.perf_counter()
            reports = make_reports(n_reports, titles, hub_key)
            out["seal_reports_per_s"] = round(n_reports / (time.perf_counter() - t))

            # 1. aggregator: shard parts of 400 reports (k = 50 TVs x 8), synced each.
            agg = ShuffleStore(root / "agg.mdb")
            t = time.perf_counter()
            for i in range(0, n_reports, 400):
                chunk = reports[i:i + 400]
                agg.receive(batch_id(chunk), 0, chunk, 0)
            recv_s = time.perf_counter() - t
            t = time.perf_counter()
            agg.mix()
            pending = agg.pending()
            for p in pending:
                agg.acked(p.batch_id, p.part)
            mix_s = time.perf_counter() - t
            agg.close()
            out["aggregator_receive_reports_per_s"] = round(n_reports / recv_s)
            out["aggregator_mix_reports_per_s"] = round(n_reports / mix_s)

            # 2. hub ingest: open + sum, then the Raft commit, part by part.
            parts = split_parts(reports)
            keys = {hub_key.key_id: HubKey(hub_key.key_id, hub_key.public,
                                           _private(store, hub_key.key_id))}
            t = time.perf_counter()
            for p in parts:
                open_batch(keys, p)
            open_1_s = time.perf_counter() - t
            threads = len(os.sched_getaffinity(0))
            with ThreadPoolExecutor(threads) as pool:  # what the service does (open_threads)
                t = time.perf_counter()
                for p in parts:
                    open_batch(keys, p, pool)
                open_s = time.perf_counter() - t
            t = time.perf_counter()
            for p in parts:
                ack = decode(svc.handle(encode(RegionBatch("eu", batch_id(p), p))))
                assert isinstance(ack, BatchAck) and not ack.duplicate, ack
            ingest_s = time.perf_counter() - t
            out["hub_open_1_thread_reports_per_s"] = round(n_reports / open_1_s)
            out["hub_open_threads"] = threads
            out["hub_open_reports_per_s"] = round(n_reports / open_s)
            out["hub_ingest_reports_per_s"] = round(n_reports / ingest_s)
            out["hub_open_share"] = round(open_s / ingest_s, 2)

            # 3. release.
            t = time.perf_counter()
            info = svc.release()
            out["release_s"] = round(time.perf_counter() - t, 3)
            out["release_body_bytes"] = info["body_bytes"]
            out["release_pairs"] = info["pairs_published"]
            out["release_titles"] = info["titles_published"]
            t = time.perf_counter()
            gparts = svc.release_parts()
            out["release_parts"] = len(gparts)
            out["release_parts_s"] = round(time.perf_counter() - t, 3)
            out["release_wire_bytes"] = sum(len(encode(p)) for p in gparts)
            # The next release, with new reports and no new title: the broadcast carries
            # the titles changed since the previous release (none), not the registry.
            more = make_reports(1500, titles, hub_key, seed=2)
            ack = decode(svc.handle(encode(RegionBatch("eu", batch_id(more), tuple(more)))))
            assert isinstance(ack, BatchAck) and not ack.duplicate, ack
            svc.release()
            nparts = svc.release_parts()
            out["next_release_parts"] = len(nparts)
            out["next_release_wire_bytes"] = sum(len(encode(p)) for p in nparts)
            # What a shard that missed a release catches up with: the whole registry.
            full = svc.release_parts(since=0)
            out["catch_up_wire_bytes"] = sum(len(encode(p)) for p in full)
        finally:
            store.close()
    return out


def _private(store: ReplicatedLmdb, key_id: int) -> bytes:
    with store.read() as kv:
        rec = next(k for k in hub.keys(kv) if k.key_id == key_id)
    return rec.private


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", type=int, default=30_000)
    p.add_argument("--titles", type=int, default=10_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = bench(args.reports, args.titles)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:36} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
