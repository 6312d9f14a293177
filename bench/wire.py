"""Bytes on the wire of one TV over a simulated week: per push, per pull, per heartbeat.

Run: .venv/bin/python bench/wire.py [--json] [--days 7] [--views 60] [--tier active]

The real brain (fast embedder), the real sync cycle and device client, the real
shard service in process (omega.sim.tvweek), on a simulated clock: views every
evening, a release a day (150 titles' top-20 lists, popularity, trends, 2 new
titles with float16 embeddings). Push = the Push frame the TV sends (constant: 8
sealed reports, dummies filling); pull = the PullResp frame it receives. Also what
zstd (level 3, per frame) would save: sealed reports are random bytes, so pushes
do not compress; pulls do somewhat (ids, floats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omega.protocol import Heartbeat, PullResp, Push, decode
from omega.sim.tvweek import simulate_week


def summary(sizes: list[int]) -> dict[str, float]:
    s = sorted(sizes)
    if not s:
        return {"median": 0, "p99": 0, "max": 0, "n": 0}
    p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
    return {"median": statistics.median(s), "p99": p99, "max": s[-1], "n": len(s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--views", type=int, default=60, help="views over the whole run")
    ap.add_argument("--tier", choices=("premium", "active", "casual"), default="active")
    ap.add_argument("--titles", type=int, default=2000, help="catalog size")
    args = ap.parse_args()
    catalog = [f"m{i}" for i in range(args.titles)]
    views = [(catalog[(i * 131) % len(catalog)], 1.0 if i % 4 else 0.3)
             for i in range(args.views)]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        week = simulate_week(Path(tmp) / "brain", views, catalog, days=args.days,
                             tier=args.tier)
    took = time.monotonic() - t0
    push, pull, hb, push_z, pull_z = [], [], [], [], []
    cctx = zstandard.ZstdCompressor(level=3)
    for f in week.frames:
        sent = decode(f.sent)
        if isinstance(sent, Push):
            push.append(len(f.sent))
            push_z.append(len(cctx.compress(f.sent)))
        elif isinstance(sent, Heartbeat):
            hb.append(len(f.sent))
        reply = decode(f.reply)
        if isinstance(reply, PullResp):
            pull.append(len(f.reply))
            pull_z.append(len(cctx.compress(f.reply)))
    out = {
        "push": summary(push), "pull": summary(pull), "heartbeat": summary(hb),
        "zstd": {"push": summary(push_z), "pull": summary(pull_z)},
        "days": args.days, "tier": args.tier, "views": args.views,
        "reports_real": week.status["reports_pushed"],
        "bytes_sent_total": sum(len(f.sent) for f in week.frames),
        "bytes_received_total": sum(len(f.reply) for f in week.frames),
        "seconds": round(took, 1),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"one TV, {args.days} simulated days, tier {args.tier}, {args.views} views, "
          f"{out['reports_real']} real reports ({took:.1f} s)")
    print(f"{'frame':<10} {'n':>6} {'median B':>9} {'p99 B':>7} {'max B':>7}   zstd median/max")
    for name, key in (("push", "push"), ("pull", "pull"), ("heartbeat", "heartbeat")):
        s = out[key]
        assert isinstance(s, dict)
        z = out["zstd"].get(key) if isinstance(out["zstd"], dict) else None
        zs = f"{z['median']:.0f} / {z['max']:.0f}" if z else "-"
        print(f"{name:<10} {s['n']:>6} {s['median']:>9.0f} {s['p99']:>7.0f} "
              f"{s['max']:>7.0f}   {zs}")
    print(f"sent {out['bytes_sent_total']:,} B, received {out['bytes_received_total']:,} B "
          "in the week")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
