"""Figures for docs/raft.md: commit rate and latency, failover time, idle CPU.

A 3-replica group in 3 processes on 127.0.0.1 (with the cluster password, as in
production). Run: ``.venv/bin/python tests/integration/raft_node_bench.py``.
Bounded: every phase has a count and a time limit. Prints one JSON object a line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from raft_node_harness import Cluster, Node, wait_for


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(leader: Node, label: str, n: int, size: int, threads: int) -> dict[str, Any]:
    reply = leader.request("load", timeout=90, prefix=f"{label}-{time.monotonic_ns()}-",
                           n=n, size=size, threads=threads, max_s=60, timeout_s=5)
    acked = len(reply["acked"])
    return {"phase": label, "command_bytes": size, "callers": threads, "committed": acked,
            "errors": len(reply["errors"]), "commits_per_s": round(acked / reply["seconds"]),
            **{k: v for k, v in reply.items() if k.endswith("_ms")}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000, help="commands per load phase")
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--dev", action="store_true", help="no password (dev_mode)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), password=None) if args.dev else Cluster(Path(tmp))
        try:
            cluster.start()
            leader = cluster.leader()
            pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            load(leader, "warm-up", 200, 16, 1)
            for label, size, threads in (("sync-16B", 16, 1), ("sync-1KB", 1024, 1),
                                         ("8-callers-1KB", 1024, 8)):
                print(json.dumps(load(cluster.leader(), label, args.n, size, threads)),
                      flush=True)

            idle_from = [cpu_seconds(p) for p in pids]
            started = time.monotonic()
            wait_for(lambda: time.monotonic() - started >= 5.0, 10, "5 s of idling")
            idle = sum(cpu_seconds(p) for p in pids) - sum(idle_from)
            print(json.dumps({"phase": "idle", "cpu_percent_3_replicas":
                              round(100 * idle / (time.monotonic() - started), 1)}), flush=True)

            times = []
            for _ in range(args.failovers):
                old = cluster.leader()
                survivors = [n for n in cluster.nodes if n is not old]
                killed = time.monotonic()
                old.kill()

                def elected(nodes: list[Node] = survivors) -> bool:
                    return any(s["role"] == "leader" for s in (n.status() for n in nodes))

                wait_for(elected, 10, "a new leader", interval=0.005)
                times.append(round((time.monotonic() - killed) * 1000))
                old.start()
                cluster.converged()
            if times:
                print(json.dumps({"phase": "failover", "new_leader_ms": times,
                                  "median_ms": statistics.median(times)}), flush=True)
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
