"""What verifying ``state.mdb`` costs at start and sealing it at close (omega/raft/integrity.py).

Run: .venv/bin/python bench/store_check.py [--reports N] [--per-push K] [--report-bytes B]

Builds a shard state of N reports the way the shard does (``state.apply`` of
``PushBatch`` commands through ``LmdbStore.apply_entry``: 100 devices per batch,
K reports per push, B-byte opaque reports), then times, on that file:

- the check a replica runs before it opens its store (a child process reads every
  record of every database and hashes them: ``integrity.verify``), cold (page
  cache dropped for the file with ``posix_fadvise(DONTNEED)``) and warm;
- the seal written at a clean close (``LmdbStore.state_hash``).

Prints the file size, record count and seconds (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from omega.raft import integrity
from omega.raft.kv import LmdbStore
from omega.shard import state
from omega.shard.commands import PushBatch, PushEntry, encode_command


def build(path: Path, reports: int, per_push: int, report_bytes: int) -> LmdbStore:
    store = LmdbStore(path, state.DATABASES, map_size=1 << 34, fsync=False)
    devices_per_batch = 100
    batch_reports = devices_per_batch * per_push
    batches = (reports + batch_reports - 1) // batch_reports
    seq = 1
    for b in tqdm(range(batches), desc="building", unit="batch"):
        entries = []
        for d in range(devices_per_batch):
            dhash = hashlib.sha256(f"dev{(b * devices_per_batch + d) % 50_000}".encode()).digest()
            reps = tuple(os.urandom(report_bytes) for _ in range(per_push))
            entries.append(PushEntry(dhash, seq, hashlib.sha256(b"".join(reps)).digest()[:16],
                                     reps))
        seq += 1
        cmd = encode_command(PushBatch(now_ms=1_000 * b, bucket_devices=10**9,
                                       entries=tuple(entries)))
        store.apply_entry(b + 1, cmd, state.apply)
    store.sync()
    return store


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=int, default=1_000_000)
    ap.add_argument("--per-push", type=int, default=10)
    ap.add_argument("--report-bytes", type=int, default=73)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="store-check-") as tmp:
        path = Path(tmp) / "state.mdb"
        store = build(path, args.reports, args.per_push, args.report_bytes)
        t0 = time.monotonic()
        _, digest = store.state_hash()
        seal_s = time.monotonic() - t0
        store.close()
        drop_cache(path)
        cold = integrity.verify(path, list(state.DATABASES))
        warm = integrity.verify(path, list(state.DATABASES))
        assert cold.ok and warm.ok and warm.state_hash == digest, (cold, warm)
        out = {"reports": args.reports, "report_bytes": args.report_bytes,
               "file_mb": round(path.stat().st_size / 2**20, 1), "records": warm.records,
               "verify_cold_s": round(cold.seconds, 2), "verify_warm_s": round(warm.seconds, 2),
               "seal_at_close_s": round(seal_s, 2)}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>16}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
