"""Shard benchmark: a 3-replica Raft group on 127.0.0.1 under simulated devices.

Run: .venv/bin/python bench/shard.py [--quick] [--json]

Phases, all in one run (ratios are taken between figures of the same run):
1. bare pynng Req0/Rep0 with the push's and the pull's sizes (the ceiling);
2. pushes: ≥ 1,000 devices in a separate load process, through DeviceClient, the
   real codec, signing, group commit and Raft; acknowledged pushes/s, p50/p99 ack
   latency, CPU seconds per process;
3. pulls spread over the three replicas (followers serve them);
4. leader failover: SIGKILL the leader ≥ 5 times; time until a survivor leads and
   until a device's push is acknowledged again;
5. the projection to the seed's plan (167 syncs/s per server) and to 10 M TVs
   syncing every 5 minutes.

The rate limit is off in the group under test (one device pushes many times per
run); everything else is the shard's default configuration, including
``[transport] workers`` (8: a push waiting for its commit holds no worker, its
reply is deferred). The bare pynng server keeps 128 blocking context threads
(``--workers``), one per request in flight as its model requires.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

SEED_SYNCS_PER_SERVER = 10_000_000 / 60 / 1000  # 10 M syncs a minute over 1,000 servers
FLEET_CONCURRENT = 10_000_000
SYNC_PERIOD_S = 300.0
#: A sealed co-view report: a libsodium sealed box (48 bytes) around ~100 bytes.
REPORT_BYTES = 150
PULL_REQUEST_BYTES = 120
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))]


# -- worker processes ------------------------------------------------------------------


def worker_bare_server(port: int, workers: int, reply_bytes: int) -> None:
    import pynng

    sock = pynng.Rep0(listen=f"tcp://127.0.0.1:{port}")
    reply = b"r" * reply_bytes

    def serve() -> None:
        ctx = sock.new_context()
        while True:
            ctx.recv()
            ctx.send(reply)

    for _ in range(workers):
        threading.Thread(target=serve, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    # Exit without interpreter teardown: nng_fini at exit with 128 threads parked in
    # receive can panic (nng prints a backtrace) before the parent's SIGKILL lands.
    os._exit(0)


def _window(run: Any, seconds: float, warmup: float) -> tuple[float, float, float]:
    """Run until warm, announce the window, run it; return (t0, t1, own cpu seconds)."""
    done = threading.Event()
    done.wait(warmup)
    print("start", flush=True)
    t0, c0 = time.monotonic(), time.process_time()
    done.wait(seconds)
    t1, c1 = time.monotonic(), time.process_time()
    print("end", flush=True)
    return t0, t1, c1 - c0


def worker_bare_client(endpoint: str, threads: int, seconds: float, warmup: float,
                       request_bytes: int) -> None:
    import pynng

    sock = pynng.Req0(dial=endpoint)
    payload = b"q" * request_bytes
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    lock = threading.Lock()

    def run() -> None:
        ctx = sock.new_context()
        mine = []
        while not stop.is_set():
            t = time.monotonic()
            ctx.send(payload)
            ctx.recv()
            e = time.monotonic()
            mine.append((e, e - t))
        with lock:
            samples.extend(mine)

    ths = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for th in ths:
        th.start()
    t0, t1, cpu = _window(None, seconds, warmup)
    stop.set()
    for th in ths:
        th.join(10)
    window = [dt for t, dt in samples if t0 <= t <= t1]
    print(json.dumps({"rate": len(window) / (t1 - t0), "p50_ms": pct(window, 50) * 1e3,
                      "p99_ms": pct(window, 99) * 1e3, "cpu_s": cpu, "seconds": t1 - t0}),
          flush=True)
    os._exit(0)  # pynng sockets close slowly with threads parked in recv


def worker_push(endpoints: list[str], devices: int, threads: int, seconds: float,
                warmup: float) -> None:
    from shard_harness import Load

    load = Load(endpoints, devices, threads=threads, prefix="bench",
                report_bytes=REPORT_BYTES).start()
    t0, t1, cpu = _window(None, seconds, warmup)
    r = load.stop()
    window = [dt for t, dt in r.latencies if t0 <= t <= t1]
    print(json.dumps({"rate": len(window) / (t1 - t0), "acked": len(r.acked),
                      "p50_ms": pct(window, 50) * 1e3, "p99_ms": pct(window, 99) * 1e3,
                      "errors": dict(r.errors), "cpu_s": cpu, "seconds": t1 - t0}), flush=True)
    os._exit(0)  # skip interpreter teardown of nng objects (the figures are out)


def worker_pull(endpoints: list[str], devices: int, threads: int, seconds: float,
                warmup: float) -> None:
    from shard_harness import FLEET_KEY

    from omega.client import ClientSettings, DeviceClient
    from omega.protocol import derive_device_key, encode
    from omega.transport import RpcClient, TransportSettings

    rpcs = [RpcClient(ep, TransportSettings(request_timeout_s=2.0, retries=0)) for ep in endpoints]
    settings = ClientSettings(request_timeout_s=2.0, attempts=3)
    clients = [DeviceClient(endpoints, f"pull{i:05d}", derive_device_key(FLEET_KEY, f"pull{i:05d}"),
                            settings, requester=rpcs[i % len(rpcs)]) for i in range(devices)]
    stop = threading.Event()
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def run(mine: list[DeviceClient]) -> None:
        out = []
        while not stop.is_set():
            for c in mine:
                if stop.is_set():
                    break
                t = time.monotonic()
                try:
                    resp = c.pull(0, "eu")
                except Exception:  # counted as missing samples
                    continue
                e = time.monotonic()
                out.append((e, e - t, len(encode(resp))))
        with lock:
            samples.extend(out)

    ths = [threading.Thread(target=run, args=(clients[i::threads],), daemon=True)
           for i in range(threads)]
    for th in ths:
        th.start()
    t0, t1, cpu = _window(None, seconds, warmup)
    stop.set()
    for th in ths:
        th.join(10)
    window = [(dt, size) for t, dt, size in samples if t0 <= t <= t1]
    lat = [dt for dt, _ in window]
    print(json.dumps({"rate": len(window) / (t1 - t0), "p50_ms": pct(lat, 50) * 1e3,
                      "p99_ms": pct(lat, 99) * 1e3,
                      "reply_bytes": statistics.median([s for _, s in window]) if window else 0,
                      "cpu_s": cpu, "seconds": t1 - t0}), flush=True)
    for r in rpcs:
        r.close()
    os._exit(0)


# -- the orchestrating process ---------------------------------------------------------


def run_worker(args: list[str], watch: dict[str, int], timeout: float) -> tuple[dict[str, Any],
                                                                              dict[str, float]]:
    """Run a worker process; CPU of ``watch`` processes over its announced window."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout is not None
    before: dict[str, float] = {}
    cpu: dict[str, float] = {}
    result: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        line = line.strip()
        if line == "start":
            before = {k: cpu_s(pid) for k, pid in watch.items()}
        elif line == "end":
            cpu = {k: cpu_s(pid) - before.get(k, 0.0) for k, pid in watch.items()}
        elif line.startswith("{"):
            result = json.loads(line)
        if time.monotonic() > deadline:
            break
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
    return result, cpu


def bare(label: str, request_bytes: int, reply_bytes: int, threads: int, workers: int,
         seconds: float, warmup: float) -> dict[str, Any]:
    from shard_harness import free_ports

    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, __file__, "--bare-server", str(port),
                               "--workers", str(workers), "--reply-bytes", str(reply_bytes)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    server.stdout.readline()
    try:
        result, cpu = run_worker(["--worker", "bare", "--endpoint", f"tcp://127.0.0.1:{port}",
                                  "--threads", str(threads), "--seconds", str(seconds),
                                  "--warmup", str(warmup), "--request-bytes",
                                  str(request_bytes)],
                                 {"server": server.pid}, seconds + warmup + 60)
    finally:
        server.stdin.close()
        server.kill()
        server.wait()
    result["cpu_s_server"] = cpu.get("server")
    result["label"] = label
    return result


def failover(c: Any, kills: int) -> dict[str, Any]:
    from shard_harness import FLEET_KEY, wait_for

    from omega.client import ClientSettings, DeviceClient
    from omega.protocol import derive_device_key

    elect: list[float] = []
    write: list[float] = []
    for k in range(kills):
        c.wait_converged(60)
        leader = c.wait_leader(60)
        survivors = [n for n in c.nodes if n is not leader]
        name = f"failover{k}"
        dev = DeviceClient([n.listen for n in survivors], name, derive_device_key(FLEET_KEY, name),
                           ClientSettings(request_timeout_s=0.5, attempts=100, call_timeout_s=30.0,
                                          backoff_s=0.01, backoff_max_s=0.05))
        leader.kill()
        t0 = time.monotonic()
        got: dict[str, float] = {}

        def probe_write(dev: DeviceClient = dev, got: dict[str, float] = got,
                        t0: float = t0) -> None:
            dev.push([b"failover"])
            got["write"] = time.monotonic() - t0

        th = threading.Thread(target=probe_write)
        th.start()
        wait_for(lambda s=survivors: any((n.status() or {}).get("role") == "leader" for n in s),
                 30, "a new leader", interval=0.002)
        elect.append(time.monotonic() - t0)
        th.join(35)
        dev.close()
        write.append(got.get("write", float("nan")))
        leader.spawn()
        c.wait_leader(60)
    return {"kills": kills, "election_median_s": statistics.median(elect),
            "election_max_s": max(elect), "write_median_s": statistics.median(write),
            "write_max_s": max(write), "elections_s": elect, "writes_s": write}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short phases (about a minute in all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--threads", type=int, default=64, help="load threads (requests in flight)")
    p.add_argument("--workers", type=int, default=128,
                   help="bare pynng server: worker threads (one blocking context each)")
    p.add_argument("--shard-workers", type=int, default=8,
                   help="replicas: [transport] workers (a push waiting for its commit holds "
                        "no worker: its reply is deferred)")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--delay-ms", type=float, default=None,
                   help="group_commit_max_delay_ms of the group (default: the shard's)")
    p.add_argument("--pipeline", type=int, default=None,
                   help="group_commit_pipeline of the group (default: the shard's)")
    p.add_argument("--launcher", choices=("runner", "omega-node"), default="runner")
    p.add_argument("--metrics-cost", action="store_true",
                   help="only compare acked pushes/s with metrics on ([admin] metrics = true, "
                        "scraped every second) and off, on omega-node groups, alternating")
    p.add_argument("--rounds", type=int, default=2, help="--metrics-cost: rounds of each")
    # worker modes (internal)
    p.add_argument("--worker", choices=("bare", "push", "pull"), help=argparse.SUPPRESS)
    p.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--endpoints", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--request-bytes", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--reply-bytes", type=int, default=24, help=argparse.SUPPRESS)
    a = p.parse_args()
    seconds = a.seconds or (5.0 if a.quick else 15.0)
    if a.bare_server:
        worker_bare_server(a.bare_server, a.workers, a.reply_bytes)
        return 0
    if a.worker == "bare":
        worker_bare_client(a.endpoint, a.threads, seconds, a.warmup, a.request_bytes)
        return 0
    if a.worker == "push":
        worker_push(a.endpoints.split(","), a.devices, a.threads, seconds, a.warmup)
        return 0
    if a.worker == "pull":
        worker_pull(a.endpoints.split(","), a.devices, a.threads, seconds, a.warmup)
        return 0
    if a.metrics_cost:
        return metrics_cost(a, seconds)
    return orchestrate(a, seconds)


def _scrape(control: str) -> int:
    """One scrape of a replica's metrics over its control socket; bytes of text."""
    from omega.protocol import CtlReply, CtlRequest, decode, encode
    from omega.transport import RpcClient, TransportSettings

    with RpcClient(control, TransportSettings(request_timeout_s=2.0, retries=0)) as c:
        reply = decode(c.request(encode(CtlRequest("metrics")), timeout_s=2.0))
    return len(reply.payload) if isinstance(reply, CtlReply) else 0


def timing_overhead_us(n: int = 50_000, reps: int = 7) -> tuple[float, float]:
    """In-process, min of ``reps``: µs a push's timing adds (a clock read and one
    ``FastHistogram.observe``, on the Raft thread) and µs the read-path wrapper adds
    to a request answered at once."""
    from omega.ops.metrics.histogram import FastHistogram
    from omega.ops.metrics.node import NodeMetrics

    hist = FastHistogram("a", "", (1.0, 10.0, 100.0))

    class Hists:
        sync_latency = hist

    def handler(_frame: bytes) -> bytes:
        return b"y"

    timed = NodeMetrics.timed_handler(Hists(), handler)  # type: ignore[arg-type]
    clock = time.monotonic
    best = {"push": float("inf"), "plain": float("inf"), "timed": float("inf")}
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            hist.observe((clock() - 1.0) * 1000.0)
        best["push"] = min(best["push"], (time.perf_counter() - t) / n * 1e6)
        for name, fn in (("plain", handler), ("timed", timed)):
            t = time.perf_counter()
            for _ in range(n):
                fn(b"x")
            best[name] = min(best[name], (time.perf_counter() - t) / n * 1e6)
    return best["push"], best["timed"] - best["plain"]


def metrics_cost(a: argparse.Namespace, seconds: float) -> int:
    """Acked pushes/s of a 3-replica omega-node group, metrics on vs off, same run.

    "on": ``[admin] metrics = true`` (each device request timed into the
    ``constellation_sync_latency_ms`` histogram) and every replica scraped once a
    second, as Prometheus would; "off": ``[admin] metrics = false``. Rounds
    alternate (on, off, on, off, ...) so that drift on a shared machine hits both.
    """
    from shard_harness import ShardCluster

    warm = 1.0 if a.quick else 2.0
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu_us: dict[str, list[float]] = {"on": [], "off": []}  # replica CPU per acked push
    scrapes = [0]
    scrape_s: list[float] = []
    push_us, read_us = timing_overhead_us()
    print(f"in-process: timing adds {push_us:.2f} us to an acked push, {read_us:.2f} us to a "
          "request answered at once", flush=True)
    for i in range(2 * a.rounds):
        mode = ("on", "off")[i % 2]
        with tempfile.TemporaryDirectory(prefix="omega-bench-metrics-") as tmp:
            c = ShardCluster(Path(tmp), workers=a.shard_workers, launcher="omega-node",
                             shard={"rate_limit_interval_s": 0.0, "pull_interval_s": 0.0},
                             extra=f"[admin]\nmetrics = {str(mode == 'on').lower()}")
            stop = threading.Event()

            def scrape(c: Any = c, stop: threading.Event = stop) -> None:
                while not stop.wait(1.0):
                    for node in c.nodes:
                        try:
                            t = time.perf_counter()
                            _scrape(node.control)
                            scrape_s.append(time.perf_counter() - t)
                            scrapes[0] += 1
                        except Exception:  # a replica busy electing: next second
                            pass

            try:
                c.start(120)
                scraper = threading.Thread(target=scrape, daemon=True)
                if mode == "on":
                    scraper.start()
                watch = {n.name: n.pid for n in c.nodes}
                push, cpu = run_worker(["--worker", "push", "--endpoints",
                                        ",".join(c.endpoints), "--devices", str(a.devices),
                                        "--threads", str(a.threads), "--seconds", str(seconds),
                                        "--warmup", str(warm)], watch, seconds + warm + 120)
                rates[mode].append(push["rate"])
                per_push = 1e6 * sum(cpu.values()) / max(1.0, push["rate"] * push["seconds"])
                cpu_us[mode].append(per_push)
                print(f"  round {i // 2 + 1} metrics {mode:>3}: {push['rate']:,.0f} acked "
                      f"pushes/s, p50 {push['p50_ms']:.1f} ms, p99 {push['p99_ms']:.1f} ms; "
                      f"replica CPU {per_push:.0f} us/push", flush=True)
            finally:
                stop.set()
                c.close()
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    c_on, c_off = statistics.median(cpu_us["on"]), statistics.median(cpu_us["off"])
    print(f"metrics on: {on:,.0f} pushes/s, off: {off:,.0f} pushes/s (medians of "
          f"{a.rounds}); throughput cost {100 * (1 - on / off):+.1f} % (goal <= 5 %); "
          f"replica CPU per push {c_on:.0f} vs {c_off:.0f} us ({100 * (c_on / c_off - 1):+.1f} "
          f"%); {scrapes[0]} scrapes while on")
    scrape_ms = 1000 * statistics.median(scrape_s) if scrape_s else float("nan")
    # Bound from the parts: the extra CPU of timing every request plus one scrape a
    # second per replica (its wall time, an upper bound on its CPU), over the CPU the
    # group spends per push at the measured rate.
    extra_us = push_us + 1e6 * (scrape_ms / 1000) * len(c.nodes) / off
    print(f"bound from the parts: timing {push_us:.2f} us per push and a {scrape_ms:.1f} ms "
          f"scrape per replica per second at {off:,.0f} pushes/s = {extra_us:.1f} us per push "
          f"of {c_off:.0f} us: {100 * extra_us / c_off:.1f} %")
    if a.json:
        print(json.dumps({"on": rates["on"], "off": rates["off"], "median_on": on,
                          "median_off": off, "cost": 1 - on / off, "cpu_us_on": cpu_us["on"],
                          "cpu_us_off": cpu_us["off"], "scrapes": scrapes[0]}))
    return 0


def orchestrate(a: argparse.Namespace, seconds: float) -> int:
    from shard_harness import ShardCluster

    warm = 1.0 if a.quick else 2.0
    say = (lambda *x: None) if a.json else (lambda *x: print(*x, flush=True))
    out: dict[str, Any] = {"devices": a.devices, "threads": a.threads, "workers": a.workers,
                           "shard_workers": a.shard_workers, "seconds": seconds}
    t_start = time.monotonic()
    push_req, push_rep = push_sizes()
    say(f"bare pynng: {a.threads} client threads, {a.workers} server threads, {seconds:g} s")
    out["bare_push"] = bare("push sizes", push_req, push_rep, a.threads, a.workers, seconds,
                            warm)
    say(f"  push sizes ({push_req} B → {push_rep} B): {out['bare_push']['rate']:,.0f} req/s")
    with tempfile.TemporaryDirectory(prefix="omega-bench-shard-") as tmp:
        shard: dict[str, Any] = {"rate_limit_interval_s": 0.0, "pull_interval_s": 0.0,
                                 "k_anonymity": 50}
        if a.delay_ms is not None:
            shard["group_commit_max_delay_ms"] = a.delay_ms
        if a.pipeline is not None:
            shard["group_commit_pipeline"] = a.pipeline
        out["shard_settings"] = shard
        c = ShardCluster(Path(tmp), workers=a.shard_workers, launcher=a.launcher, shard=shard)
        try:
            leader = c.start(120)
            seeded = _seed_global(leader)
            pull_reply = seeded
            out["bare_pull"] = bare("pull sizes", PULL_REQUEST_BYTES, pull_reply, a.threads,
                                    a.workers, seconds, warm)
            say(f"  pull sizes ({PULL_REQUEST_BYTES} B → {pull_reply} B): "
                f"{out['bare_pull']['rate']:,.0f} req/s")
            watch = {n.name: n.pid for n in c.nodes}
            leader = c.wait_leader(60)  # it may have moved while the bare phases ran
            say(f"group of 3 ({a.launcher}, {a.shard_workers} workers each); leader "
                f"{leader.name}; {a.devices} devices pushing")
            push, cpu = run_worker(["--worker", "push", "--endpoints", ",".join(c.endpoints),
                                    "--devices", str(a.devices), "--threads", str(a.threads),
                                    "--seconds", str(seconds), "--warmup", str(warm)],
                                   watch, seconds + warm + 120)
            push["cpu_s_replicas"] = {(k + ("*" if k == leader.name else "")): round(v, 2)
                                      for k, v in cpu.items()}
            out["push"] = push
            now_leading = c.wait_leader(60)  # may have changed on a starved machine
            out["leader_changed_during_push"] = now_leading is not leader
            stats = now_leading.ctl("shard") or {}
            out["group_commit"] = stats.get("group_commit")
            say(f"  acked pushes/s {push['rate']:,.0f}, p50 {push['p50_ms']:.1f} ms, "
                f"p99 {push['p99_ms']:.1f} ms, errors {push.get('errors')}")
            say(f"  CPU s in {push['seconds']:.1f} s: load process {push['cpu_s']:.2f}, "
                f"replicas {push['cpu_s_replicas']} (* leader); group commit {out['group_commit']}")
            pull, cpu = run_worker(["--worker", "pull", "--endpoints", ",".join(c.endpoints),
                                    "--devices", str(a.devices), "--threads", str(a.threads),
                                    "--seconds", str(seconds), "--warmup", str(warm)],
                                   watch, seconds + warm + 120)
            pull["cpu_s_replicas"] = {k: round(v, 2) for k, v in cpu.items()}
            out["pull"] = pull
            say(f"  pulls/s {pull['rate']:,.0f} (reply {pull['reply_bytes']:.0f} B), "
                f"p50 {pull['p50_ms']:.1f} ms, p99 {pull['p99_ms']:.1f} ms; CPU s: load "
                f"{pull['cpu_s']:.2f}, replicas {pull['cpu_s_replicas']}")
            say(f"failover: SIGKILL the leader {a.kills} times")
            out["failover"] = failover(c, a.kills)
            f = out["failover"]
            say(f"  new leader: median {f['election_median_s']:.3f} s, max "
                f"{f['election_max_s']:.3f} s; push acked again: median "
                f"{f['write_median_s']:.3f} s, max {f['write_max_s']:.3f} s")
        finally:
            c.close()
    x = out["push"]["rate"]
    ratio = x / out["bare_push"]["rate"]
    out["ratio_push_vs_bare"] = ratio
    out["ratio_pull_vs_bare"] = out["pull"]["rate"] / out["bare_pull"]["rate"]
    need = FLEET_CONCURRENT / SYNC_PERIOD_S
    out["projection"] = {
        "seed_syncs_per_server_s": SEED_SYNCS_PER_SERVER,
        "seed_servers_per_group": x / SEED_SYNCS_PER_SERVER,
        "fleet_syncs_s": need,
        "groups_for_fleet": math.ceil(need / x) if x else None,
        "servers_for_fleet": 3 * math.ceil(need / x) if x else None,
    }
    out["elapsed_s"] = time.monotonic() - t_start
    pr = out["projection"]
    say(f"ratio acked pushes / bare pynng (same sizes): {ratio:.2f} (goal >= 0.25); "
        f"pulls / bare: {out['ratio_pull_vs_bare']:.2f}")
    say(f"projection: the seed plans {SEED_SYNCS_PER_SERVER:.0f} syncs/s per server; one group "
        f"at {x:,.0f} pushes/s does the work of {pr['seed_servers_per_group']:.1f} seed servers. "
        f"10 M TVs syncing every {SYNC_PERIOD_S / 60:.0f} min = {need:,.0f} syncs/s → "
        f"{pr['groups_for_fleet']} groups ({pr['servers_for_fleet']} replica processes).")
    say(f"elapsed {out['elapsed_s']:.0f} s")
    if a.json:
        print(json.dumps(out, indent=2, default=float))
    return 0


def push_sizes() -> tuple[int, int]:
    """Wire sizes of a signed push with one sealed report, and of its ack."""
    from omega.protocol import Push, PushAck, encode, sign

    now = int(time.time() * 1000)
    push = sign(Push("bench00000", now * 1000, now, (b"r" * REPORT_BYTES,)), b"k" * 32)
    return len(encode(push)), len(encode(PushAck(now * 1000, 12345, 0.0)))


def _seed_global(leader: Any) -> int:
    """Publish a synthetic release on the leader; return a typical full pull's size."""
    leader.ctl("global", timeout=30.0)
    from shard_harness import FLEET_KEY

    from omega.client import DeviceClient
    from omega.protocol import derive_device_key, encode

    with DeviceClient(leader.listen, "sizer", derive_device_key(FLEET_KEY, "sizer")) as dev:
        return len(encode(dev.pull(0, "eu")))


if __name__ == "__main__":
    sys.exit(main())
