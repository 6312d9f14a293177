"""CPU and memory of an idle TV node with its sync agent, between syncs.

Run: .venv/bin/python bench/tv_idle.py [--seconds 600] [--no-agent] [--json]

Starts a 3-replica shard group (tests/integration/shard_harness.py, runner) and a
real ``omega-node --role tv`` (real brain and model, the default tier: a sync every
5 min, a heartbeat every minute) with a small catalog and a few views; waits for
its first sync, then reads the TV process's CPU time (utime + stime, /proc) and RSS
over the window, and the wake-ups (voluntary context switches) of each of its
threads, by thread name. ``--no-agent`` runs the same TV without ``[sync]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.shard_harness import cluster
from tests.integration.sync_harness import TvNode
from tests.nodeproc import wait_for

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wakeups(pid: int) -> Counter[str]:
    """Voluntary context switches per thread (``name/tid``)."""
    out: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[f"{name}/{task.name}"] += int(line.split()[1])
        except OSError:
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--no-agent", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), launcher="runner") as c:
        c.start()
        sync = {"enabled": not args.no_agent, "interval_s": 0.0, "heartbeat_s": 60.0}
        tv = TvNode(Path(tmp), c.endpoints, **sync).start()
        try:
            wait_for(tv.status, 180, "tv up")
            tv.import_catalog(50)
            for i in range(5):
                tv.observe(f"m{i}", 1_767_225_600 + 600 * i)
            if not args.no_agent:
                wait_for(lambda: (tv.status() or {}).get("sync", {}).get("last_push"), 400,
                         "first sync")
            assert tv.proc is not None
            pid = tv.proc.pid
            time.sleep(2.0)  # let the status requests above settle (measurement pacing)
            c0, w0, t0 = cpu_s(pid), wakeups(pid), time.monotonic()
            time.sleep(args.seconds)  # the measured idle window
            c1, w1, t1 = cpu_s(pid), wakeups(pid), time.monotonic()
            rss = rss_mb(pid)
            st = tv.status() or {}
        finally:
            tv.stop()
    span = t1 - t0
    per_thread = {k: round((w1[k] - w0.get(k, 0)) / span, 2) for k in w1
                  if w1[k] - w0.get(k, 0) > 0}
    out = {"agent": not args.no_agent, "seconds": round(span, 1),
           "cpu_percent_of_one_core": round(100 * (c1 - c0) / span, 3),
           "cpu_s_per_minute": round(60 * (c1 - c0) / span, 3), "rss_mb": round(rss, 1),
           "wakeups_per_s": round(sum(per_thread.values()), 2),
           "wakeups_per_s_by_thread": dict(sorted(per_thread.items(), key=lambda kv: -kv[1])),
           "pushes": (st.get("sync") or {}).get("last_push_seq") is not None}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
