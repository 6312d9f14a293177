"""How much of the crowd's lists a TV downloads again at every release.

Run: .venv/bin/python bench/list_churn.py --data ../shared/data/ml-latest-small
     [--top-k 20 50] [--fleet 1000000] [--interval-s 900]

Every TV's reports (the benchmark's users, as in ``bench quality --federated``)
summed once; two releases of the same sums with fresh noise (two seeds), as
consecutive releases with nothing new would be. A list whose bytes differ is a
changed record at the shard, so every TV pulls it again (TVs pull every list: asking
for the titles they watched would tell the shard what they watched). Prints, per
top-k: lists published, lists unchanged (bytes, order, set), the lists' bytes as the
shard stores them, and what that is per TV per day at one release every
``--interval-s`` and at one a day. Real releases also carry new reports, so these
are lower bounds of the churn.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack

from omega.sim.federated import FederatedSettings, simulate_crowd
from omega.sim.movielens import load_movielens, split_leave_last


def churn(data_dir: Path, top_ks: list[int], fleet: int, interval_s: float) -> list[dict[str, Any]]:
    data = load_movielens(data_dir)
    split = split_leave_last(data)
    # Unsealed: sealing changes nothing the hub sums (tested), and costs minutes here.
    fed = replace(FederatedSettings(), sealed_reports=0)
    crowd = simulate_crowd(split.users, data.items, fed)
    rows = []
    for k in top_ks:
        f = replace(fed, release=replace(fed.release, top_k=k))
        a = crowd.release(f, noise=True, fleet=fleet, seed=1)
        b = crowd.release(f, noise=True, fleet=fleet, seed=2)
        common = set(a.neighbours) & set(b.neighbours)

        def record(lst: list[tuple[str, float]]) -> bytes:
            out: bytes = msgpack.packb([[n, s] for n, s in lst])
            return out

        same_bytes = sum(1 for t in common if record(a.neighbours[t]) == record(b.neighbours[t]))
        same_order = sum(1 for t in common
                         if [n for n, _ in a.neighbours[t]] == [n for n, _ in b.neighbours[t]])
        same_set = sum(1 for t in common
                       if {n for n, _ in a.neighbours[t]} == {n for n, _ in b.neighbours[t]})
        changed_bytes = sum(len(t.encode()) + len(record(lst)) for t, lst in b.neighbours.items()
                            if t not in a.neighbours or record(a.neighbours[t]) != record(lst))
        per_day = 86_400 / interval_s
        rows.append({
            "top_k": k, "fleet": fleet, "lists": len(b.neighbours), "common": len(common),
            "unchanged_bytes": same_bytes, "unchanged_order": same_order,
            "unchanged_set": same_set, "changed_list_bytes": changed_bytes,
            "per_tv_per_day_mb": round(changed_bytes * per_day / 1e6, 1),
            "per_tv_daily_release_mb": round(changed_bytes / 1e6, 2),
        })
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a MovieLens folder")
    p.add_argument("--top-k", type=int, nargs="+", default=[20, 50])
    p.add_argument("--fleet", type=int, default=1_000_000,
                   help="the simulated fleet whose noise the releases carry")
    p.add_argument("--interval-s", type=float, default=900.0,
                   help="seconds between releases ([hub] release_interval_s)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = churn(args.data, args.top_k, args.fleet, args.interval_s)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"top-{r['top_k']}: {r['lists']:,} lists ({r['common']:,} in both releases); "
              f"unchanged: {r['unchanged_bytes']:,} byte for byte, {r['unchanged_order']:,} "
              f"in order, {r['unchanged_set']:,} as a set; changed lists "
              f"{r['changed_list_bytes']:,} bytes = {r['per_tv_per_day_mb']} MB per TV per day "
              f"at a release every {args.interval_s:.0f} s, "
              f"{r['per_tv_daily_release_mb']} MB at one a day")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
