"""Request/reply throughput and latency: Omega's full path against bare pynng.

Run: .venv/bin/python bench/transport.py [--quick] [--json] [--profile]
     [--levels 1,8,64] [--seconds 1] [--rounds 3] [--workers 8]
     [--cached-reply] [--client-decode]

The server runs in this process; the clients run as threads in a SECOND process
(multiprocessing, spawn), so both sides pay their own Python costs. For each
concurrency level three paths run back to back, same thread model (8 server
threads with one nng context each; one client context per client thread):

- ``bare``:  pynng's public API (``Rep0``/``Req0`` + ``Context.send/recv``), a fixed
  1 KB request and a fixed 5 KB reply, no work.
- ``omega``: ``RpcServer``/``RpcClient`` through the real protocol. Each client
  request is a fresh ``Push`` (~1 KB, 4 sealed reports), signed (HMAC-SHA256) and
  encoded; the server decodes it (strict validation), derives the device key
  (HMAC), verifies the signature and the time window, and answers with a freshly
  built and encoded ~5 KB ``PullResp``, which the client decodes and validates.
- ``omega-bytes``: ``RpcServer``/``RpcClient`` with the fixed bytes of ``bare``
  (transport only), to separate the transport's cost from the protocol's.

Options: ``--cached-reply`` (the server encodes the PullResp once and reuses it, as
a shard can per version and region; each Push is still decoded and verified),
``--client-decode`` (clients decode every reply in full; off by default because a
TV's decode cost would otherwise be charged to this machine's shared CPUs; replies
are always fully decoded during warm-up and checked by tag after), ``--workers``.

Each run is bounded by time (``--seconds``) and count (``--max-requests``); each path
runs ``--rounds`` times per level, interleaved with the others, and the medians are
reported (this 2-core machine is shared, single runs swing by tens of percent). The
ratio is given two ways: throughput, and CPU per request (server process + client
process), the steadier of the two when the run is CPU-bound.
``--profile`` adds where the time goes: per-stage CPU cost of the protocol work
(single thread, µs/op) and a cProfile of the server's worker threads and the
client threads for the ``omega`` path, grouped by component.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import pstats
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import numpy as np
import pynng  # the bare baseline (Omega itself imports pynng only in omega.transport)

from omega.protocol import (
    PROTOCOL_VERSION,
    ErrorReply,
    NewContent,
    PullResp,
    Push,
    decode,
    derive_device_key,
    embedding_to_wire,
    encode,
    sign,
    verify,
)
from omega.transport import RpcClient, RpcServer, TransportSettings

FLEET_KEY = b"bench-fleet-key-0123456789abcdef"
WINDOW_MS = 5 * 60 * 1000
REQ_BYTES = b"q" * 1024
REPLY_BYTES = b"r" * 5 * 1024
PATHS = ("bare", "omega", "omega-bytes")
WARMUP = 20
PULL_RESP_HEAD = bytes([PullResp.TAG, PROTOCOL_VERSION])


# --- the messages --------------------------------------------------------------------


def sample_reports(seed: int = 1) -> tuple[bytes, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.bytes(220) for _ in range(4))


def pull_resp_parts() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    titles = [f"title-{i:05d}" for i in range(400)]
    return {  # 10 titles x 10 neighbours, 40 popular, 20 trending, 2 new: ~5.2 KB
        "neighbours": tuple(
            (titles[i], tuple((titles[(i + j + 1) % 400], float(rng.random()))
                              for j in range(10)))
            for i in range(10)),
        "popularity": tuple((titles[i], float(rng.random() * 100)) for i in range(40)),
        "trends": tuple((titles[i], float(rng.normal())) for i in range(20)),
        "new_content": tuple(
            NewContent(f"new-{i}", f"A new title {i}",
                       embedding_to_wire(rng.normal(size=384) / 20)) for i in range(2)),
    }


class OmegaHandler:
    """The server's work for one request: what a shard does before touching storage."""

    def __init__(self, cached_reply: bool = False) -> None:
        self.parts = pull_resp_parts()
        # A shard answers every TV at the same version with the same delta, so it can
        # encode each (version, region) delta once: --cached-reply measures that.
        self.cached = encode(PullResp(1, **self.parts)) if cached_reply else None
        self.profiles: dict[int, cProfile.Profile] = {}
        self.profiling = False

    def __call__(self, frame: bytes) -> bytes:
        if self.profiling:
            self._profile_this_thread()
        msg = decode(frame, (Push,))
        assert isinstance(msg, Push)
        key = derive_device_key(FLEET_KEY, msg.device_id)
        verify(msg, key, int(time.time() * 1000), WINDOW_MS)
        if self.cached is not None:
            return self.cached
        return encode(PullResp(msg.seq, **self.parts))

    def _profile_this_thread(self) -> None:
        # cProfile follows one thread: start one in each worker on its first request;
        # it stays on for the rest of that thread's loop (nng calls included).
        tid = threading.get_ident()
        if tid not in self.profiles:
            prof = cProfile.Profile()
            self.profiles[tid] = prof
            prof.enable()


def on_error(exc: BaseException) -> bytes:
    return encode(ErrorReply.from_error(exc))


# --- servers (this process) --------------------------------------------------------------


class BareServer:
    """pynng's public API: Rep0, one Context + one blocking thread per worker."""

    def __init__(self, workers: int) -> None:
        self.sock = pynng.Rep0(recv_max_size=64 * 1024)
        listener = self.sock.listen("tcp://127.0.0.1:0")
        self.address = f"tcp://127.0.0.1:{socket.ntohs(listener.local_address.port)}"
        self.contexts = [self.sock.new_context() for _ in range(workers)]
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in self.contexts]
        for t in self.threads:
            t.start()

    @staticmethod
    def _run(ctx: Any) -> None:
        try:
            while True:
                ctx.recv()
                ctx.send(REPLY_BYTES)
        except pynng.NNGException:  # Closed: the bench is over
            return

    def close(self) -> None:
        for c in self.contexts:  # same order as RpcServer: contexts, threads, socket
            with contextlib.suppress(pynng.NNGException):
                c.close()
        for t in self.threads:
            t.join(5)
        self.sock.close()


def start_server(path: str, workers: int, handler: OmegaHandler) -> tuple[Any, str]:
    if path == "bare":
        srv = BareServer(workers)
        return srv, srv.address
    settings = TransportSettings(workers=workers)
    fn: Callable[[bytes], bytes] = handler if path == "omega" else (lambda b: REPLY_BYTES)
    rpc = RpcServer("tcp://127.0.0.1:0", fn, settings, on_error, name=f"bench-{path}").start()
    return rpc, rpc.address


# --- clients (the second process) ------------------------------------------------------------


def client_main(path: str, address: str, clients: int, seconds: float, max_requests: int,
                profile: bool, full_decode: bool, out: Any) -> None:
    """Run ``clients`` threads against ``address``; send the figures back on ``out``."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    per_thread_max = max(1, max_requests // clients)
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    profiles: list[cProfile.Profile] = []
    rpc: RpcClient | None = None
    bare: Any = None
    if path == "bare":
        bare = pynng.Req0(resend_time=-1, recv_max_size=64 * 1024)
        bare.dial(address, block=True)
    else:
        rpc = RpcClient(address, TransportSettings(request_timeout_s=10.0, retries=0))
    reports = sample_reports()

    def run(i: int) -> None:
        prof = cProfile.Profile() if profile else None
        ctx = bare.new_context() if bare is not None else None
        device = f"tv-{os.getpid()}-{i}"
        key = derive_device_key(FLEET_KEY, device)
        seq = 0

        def once() -> None:
            nonlocal seq
            if ctx is not None:
                ctx.send(REQ_BYTES)
                ctx.recv()
                return
            assert rpc is not None
            if path == "omega-bytes":
                rpc.request(REQ_BYTES)
                return
            seq += 1
            frame = encode(sign(Push(device, seq, int(time.time() * 1000), reports), key))
            reply = rpc.request(frame)
            if full_decode or seq <= WARMUP:
                msg = decode(reply, (PullResp, ErrorReply))
                if not isinstance(msg, PullResp):
                    raise RuntimeError(f"server refused: {msg}")
            elif reply[1:3] != PULL_RESP_HEAD:  # [tag, version, ...]: a PullResp, not an error
                raise RuntimeError("server refused the push")

        try:
            for _ in range(WARMUP):  # warm up (and check replies in full)
                once()
            ready.wait()
            go.wait()
            if prof is not None:
                prof.enable()
            mine = lat[i]
            deadline = time.perf_counter() + seconds
            while len(mine) < per_thread_max:
                t0 = time.perf_counter()
                try:
                    once()
                except Exception:
                    failures[i] += 1
                t1 = time.perf_counter()
                mine.append(t1 - t0)
                if t1 > deadline:
                    break
        finally:
            if prof is not None:
                prof.disable()
                profiles.append(prof)
            if ctx is not None:
                ctx.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    out.send("go")
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    if rpc is not None:
        rpc.close()
    if bare is not None:
        bare.close()
    all_lat = np.sort(np.concatenate([np.asarray(x) for x in lat]))
    result: dict[str, Any] = {
        "requests": int(all_lat.size), "failures": int(sum(failures)),
        "seconds": elapsed, "rps": all_lat.size / elapsed,
        "p50_ms": float(np.percentile(all_lat, 50) * 1e3),
        "p99_ms": float(np.percentile(all_lat, 99) * 1e3),
        "client_cpu_us": cpu / max(1, all_lat.size) * 1e6,
    }
    if profiles:
        result["profile"] = group_profile(profiles)
    out.send(result)
    out.close()


def run_level(path: str, clients: int, args: argparse.Namespace,
              handler: OmegaHandler, profile: bool = False) -> dict[str, Any]:
    srv, address = start_server(path, args.workers, handler)
    handler.profiling = profile and path == "omega"
    try:
        ctx = mp.get_context("spawn")
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=client_main, args=(
            path, address, clients, args.seconds, args.max_requests, profile,
            args.client_decode, send_end))
        proc.start()
        send_end.close()

        def receive() -> Any:
            if not recv_end.poll(args.seconds + 120):
                proc.kill()
                raise RuntimeError(f"client process for {path}/{clients} gave no result")
            return recv_end.recv()

        if receive() != "go":
            raise RuntimeError("client process out of step")
        cpu_start = time.process_time()
        result: dict[str, Any] = receive()
        # The server's whole process: its Python threads and nng's own I/O threads.
        result["server_cpu_us"] = (time.process_time() - cpu_start) / result["requests"] * 1e6
        proc.join(30)
    finally:
        handler.profiling = False
        srv.close()
    if profile and path == "omega":
        result["server_profile"] = group_profile(list(handler.profiles.values()))
        handler.profiles.clear()
    return result


# --- where the time goes -------------------------------------------------------------------


_BLOCKING = ("nng_ctx_recvmsg", "nng_ctx_sendmsg", "nng_recvmsg", "nng_sendmsg",
             "nng_aio_wait")


def _component(filename: str, func: str) -> str:
    if any(name in func for name in _BLOCKING):
        return "blocking"
    if "pynng._nng." in func or "_cffi_backend" in func:
        return "nng: short C calls (msg alloc/copy/free; GIL re-take)"
    if "omega/transport" in filename:
        return "omega.transport (Python)"
    if "omega/protocol/signing" in filename or "hmac" in filename or "_hashlib" in func \
            or "openssl" in func:
        return "signing (HMAC)"
    if "omega/protocol" in filename or "msgpack" in func or "msgpack" in filename \
            or "re.Pattern" in func or "numpy" in filename:
        return "protocol codec + validation"
    if "threading" in filename or "lock" in func:
        return "threads/locks"
    if "bench/transport" in filename:
        return "bench loop"
    return "other"


def group_profile(profiles: list[cProfile.Profile]) -> dict[str, float]:
    """Share per component of the profiled time spent *outside* blocking nng calls
    (tottime, %), plus ``blocking``: the share of all time spent inside them
    (waiting for the peer or the network, and re-taking the GIL)."""
    if not profiles:
        return {}
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        stats.add(p)
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = _component(filename, func)
        totals[name] = totals.get(name, 0.0) + tt
    blocking = totals.pop("blocking", 0.0)
    busy = sum(totals.values()) or 1.0
    out = {k: round(100 * v / busy, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    out["(blocking nng calls, % of all time)"] = round(100 * blocking / (busy + blocking), 1)
    return out


def stage_costs(n: int) -> dict[str, Any]:
    """CPU µs per operation of each protocol stage, one thread, best of 3."""
    parts = pull_resp_parts()
    reports = sample_reports()
    key = derive_device_key(FLEET_KEY, "tv-1")
    now = int(time.time() * 1000)
    push = Push("tv-1", 1, now, reports)
    signed = sign(push, key)
    frame = encode(signed)
    built = PullResp(1, **parts)
    reply = encode(built)

    def server_side() -> None:
        m = decode(frame, (Push,))
        assert isinstance(m, Push)
        verify(m, derive_device_key(FLEET_KEY, m.device_id), now, WINDOW_MS)
        encode(PullResp(m.seq, **parts))

    stages: dict[str, Callable[[], object]] = {
        "client: build+sign+encode Push": lambda: encode(sign(Push("tv-1", 1, now, reports), key)),
        "server: decode Push": lambda: decode(frame, (Push,)),
        "server: derive key + verify": lambda: verify(
            signed, derive_device_key(FLEET_KEY, "tv-1"), now, WINDOW_MS),
        "server: build PullResp (validates)": lambda: PullResp(1, **parts),
        "server: encode a built PullResp": lambda: encode(built),
        "client: decode PullResp": lambda: decode(reply, (PullResp,)),
        "server: whole handler": server_side,
    }
    out: dict[str, Any] = {}
    for name, fn in stages.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            best = min(best, time.process_time() - t0)
        out[name] = round(best / n * 1e6, 1)
    out["sizes: Push / PullResp bytes"] = f"{len(frame)} / {len(reply)}"
    return out


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one 1 s round per path (smoke run)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--profile", action="store_true", help="add where the time goes")
    ap.add_argument("--levels", default="1,8,64", help="client threads per level")
    ap.add_argument("--seconds", type=float, default=1.0, help="measured time per run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs per path and level, interleaved; medians are reported")
    ap.add_argument("--max-requests", type=int, default=200_000, help="cap per level")
    ap.add_argument("--workers", type=int, default=8, help="server threads")
    ap.add_argument("--cached-reply", action="store_true",
                    help="omega path: the server encodes the PullResp once and reuses it "
                         "(what a shard can do per version and region), still decoding "
                         "and verifying every Push")
    ap.add_argument("--client-decode", action="store_true",
                    help="clients decode every reply in full (a TV's cost, off by default: "
                         "the clients share this machine's CPUs with the server)")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 1.0), 1
    levels = [int(x) for x in args.levels.split(",")]
    handler = OmegaHandler(cached_reply=args.cached_reply)
    load_before = os.getloadavg()
    rows = []
    for clients in levels:
        row: dict[str, Any] = {"clients": clients}
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for r in range(args.rounds):
            # Interleave, rotating the order: this shared machine drifts.
            for path in PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]:
                runs[path].append(run_level(path, clients, args, handler))
        for path in PATHS:
            row[path] = merge_runs(runs[path])
        row["ratio_omega_bare"] = round(row["omega"]["rps"] / row["bare"]["rps"], 3)
        row["ratio_transport_bare"] = round(row["omega-bytes"]["rps"] / row["bare"]["rps"], 3)
        row["cpu_ratio_omega_bare"] = round(cpu_per_request(row["bare"])
                                            / cpu_per_request(row["omega"]), 3)
        rows.append(row)
        if not args.json:
            print_row(row, first=len(rows) == 1, args=args)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pynng": pynng.__version__,
                    "nng": pynng.ffi.string(pynng.lib.nng_version()).decode(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "seconds_per_run": args.seconds, "rounds": args.rounds,
        "server_workers": args.workers, "client_decode": args.client_decode,
        "cached_reply": args.cached_reply, "levels": rows,
    }
    if args.profile:
        report["stage_cpu_us"] = stage_costs(300 if args.quick else 2000)
        mid = levels[len(levels) // 2]
        prof = run_level("omega", mid, args, handler, profile=True)
        report["profile"] = {"clients": mid, "server_threads_pct": prof["server_profile"],
                             "client_threads_pct": prof["profile"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    m = report["machine"]
    print(f"\n{report['date']}  {report['command']}")
    print(f"{m['cpus']} CPUs, Python {m['python']}, pynng {m['pynng']} (nng {m['nng']}), "
          f"load average before/after: {m['loadavg_before'][0]} / {m['loadavg_after'][0]}")
    if args.profile:
        print("\nCPU µs per operation, one thread (best of 3):")
        for k, v in report["stage_cpu_us"].items():
            print(f"  {k:<36} {v}")
        print("\nCPU per request by part (medians above; server process):")
        for row in report["levels"]:
            t, o = row["omega-bytes"]["server_cpu_us"], row["omega"]["server_cpu_us"]
            print(f"  {row['clients']:>3} clients: transport (omega-bytes) {t:.0f} µs, "
                  f"protocol work (omega - omega-bytes) {o - t:.0f} µs")
        p = report["profile"]
        print(f"\ncProfile of the omega path at {p['clients']} clients "
              "(share of non-blocking time, %):")
        for side in ("server_threads_pct", "client_threads_pct"):
            print(f"  {side.replace('_pct', '').replace('_', ' ')}:")
            for k, v in p[side].items():
                print(f"    {k:<34} {v:5.1f}")


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over interleaved runs (sums for counts)."""
    out: dict[str, Any] = {"runs": len(runs),
                           "requests": sum(r["requests"] for r in runs),
                           "failures": sum(r["failures"] for r in runs)}
    for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us", "client_cpu_us"):
        out[key] = round(float(np.median([r[key] for r in runs])), 3)
    out["rps_all"] = [round(r["rps"]) for r in runs]
    return out


def cpu_per_request(r: dict[str, Any]) -> float:
    return float(r["server_cpu_us"] + r["client_cpu_us"])


def print_row(row: dict[str, Any], *, first: bool, args: argparse.Namespace) -> None:
    if first:
        print(f"request/reply, 1 KB request / 5 KB reply, {args.workers} server threads, "
              f"clients in a second process, {args.rounds} x {args.seconds:g} s per path "
              f"and level (medians); "
              f"CPU per request: server process / client process"
              f"{'; clients decode replies' if args.client_decode else ''}"
              f"{'; server reuses one encoded PullResp' if args.cached_reply else ''}\n")
        print(f"{'clients':>7} | {'path':<11} | {'req/s':>8} | {'p50 ms':>7} | "
              f"{'p99 ms':>7} | {'srv µs/req':>10} | {'cli µs/req':>10} | {'failed':>6}")
        print("-" * 88)
    for path in PATHS:
        r = row[path]
        print(f"{row['clients']:>7} | {path:<11} | {r['rps']:>8.0f} | {r['p50_ms']:>7.2f} | "
              f"{r['p99_ms']:>7.2f} | {r['server_cpu_us']:>10.0f} | {r['client_cpu_us']:>10.0f}"
              f" | {r['failures']:>6}")
    print(f"{'':>7} | ratio omega/bare: throughput {row['ratio_omega_bare']:.2f}, "
          f"CPU per request {row['cpu_ratio_omega_bare']:.2f}   "
          f"(transport only, omega-bytes/bare: {row['ratio_transport_bare']:.2f})")
    print("-" * 88, flush=True)


if __name__ == "__main__":
    main()
