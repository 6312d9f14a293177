"""One Raft replica in its own process, driven over stdin/stdout JSON lines.

Used by the raft integration tests and bench/raft_commit.py. It runs a
``ReplicatedLmdb`` with a small deterministic ``apply`` that makes double
application visible: every applied command bumps an ``applies`` counter, appends
to a ``log`` database, and counts a duplicate if its id was seen before.

Command bytes: ``<id> NUL <key> NUL <value>``; id ``boom`` makes apply raise.

Requests (one JSON object a line) → one JSON reply line each:
``{"op": "status"}``, ``{"op": "digest"}``, ``{"op": "counts"}``,
``{"op": "submit", "id", "key", "size", "timeout"}``,
``{"op": "load", "prefix", "n", "size", "timeout", "threads", "max_s"}``,
``{"op": "has_ids", "prefix", "n"}``, ``{"op": "snapshot"}``, ``{"op": "close"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omega.raft import KvWriter, RaftError, RaftSettings, ReplicatedLmdb

DATABASES = ("kv", "ids", "log", "meta")
_U64 = struct.Struct(">Q")


def _u64(raw: bytes | None) -> int:
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def apply(kv: KvWriter, command: bytes, index: int) -> int:
    cid, key, value = command.split(b"\x00", 2)
    if cid == b"boom":
        kv.put("kv", b"boom-partial", b"must be rolled back")
        raise ValueError("boom requested")
    applies = _u64(kv.get("meta", b"applies")) + 1
    kv.put("meta", b"applies", _U64.pack(applies))
    if kv.get("ids", cid) is not None:
        kv.put("meta", b"dups", _U64.pack(_u64(kv.get("meta", b"dups")) + 1))
    kv.put("ids", cid, _U64.pack(index))
    kv.put("log", _U64.pack(applies), cid)
    kv.put("kv", key, value)
    return applies


def command(cid: str, key: str, size: int) -> bytes:
    value = (cid.encode() * (size // max(1, len(cid)) + 1))[:size]
    return cid.encode() + b"\x00" + key.encode() + b"\x00" + value


def _error(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__, "message": str(exc),
            "leader": getattr(exc, "leader", None)}


class Node:
    def __init__(self, raft: ReplicatedLmdb) -> None:
        self.raft = raft

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "status":
            return {"ok": True, "status": self.raft.status()}
        if op == "digest":
            applied, digest = self.raft.state_digest()
            return {"ok": True, "applied": applied, "hash": digest}
        if op == "counts":
            with self.raft.read() as view:
                return {"ok": True,
                        "applies": _u64(view.get("meta", b"applies")),
                        "dups": _u64(view.get("meta", b"dups")),
                        "ids": sum(1 for _ in view.iterate("ids")),
                        "log": sum(1 for _ in view.iterate("log")),
                        "boom": view.get("kv", b"boom-partial") is not None}
        if op == "submit":
            try:
                result = self.raft.submit(command(req["id"], req.get("key", req["id"]),
                                                  int(req.get("size", 16))),
                                          float(req.get("timeout", 5.0)))
            except RaftError as exc:
                return _error(exc)
            return {"ok": True, "result": result}
        if op == "load":
            return self.load(req)
        if op == "has_ids":
            prefix, n = req["prefix"], int(req["n"])
            with self.raft.read() as view:
                missing = [i for i in range(n)
                           if view.get("ids", f"{prefix}{i}".encode()) is None]
            return {"ok": True, "missing": missing[:20], "n_missing": len(missing)}
        if op == "snapshot":
            self.raft.force_snapshot()
            return {"ok": True}
        return {"ok": False, "error": "BadRequest", "message": f"unknown op {op!r}"}

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        """Submit n commands back-to-back from `threads` callers; count acks and time."""
        prefix, n, size = req["prefix"], int(req["n"]), int(req.get("size", 16))
        threads, timeout = int(req.get("threads", 1)), float(req.get("timeout", 5.0))
        deadline = time.monotonic() + float(req.get("max_s", 30.0))
        acked: list[int] = []
        latencies: list[float] = []
        errors: list[dict[str, Any]] = []
        lock = threading.Lock()
        counter = iter(range(int(req.get("start", 0)), n))

        def take() -> Iterator[int]:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                yield i

        def worker() -> None:
            for i in take():
                t0 = time.perf_counter()
                try:
                    self.raft.submit(command(f"{prefix}{i}", f"{prefix}{i}", size), timeout)
                except RaftError as exc:
                    with lock:
                        errors.append({"i": i, **_error(exc)})
                    return
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    acked.append(i)

        start = time.perf_counter()
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        seconds = time.perf_counter() - start
        latencies.sort()
        pct = {f"p{q}_ms": round(latencies[min(len(latencies) - 1, len(latencies) * q // 100)]
                                 * 1e3, 3) for q in (50, 90, 99)} if latencies else {}
        return {"ok": True, "acked": sorted(acked), "errors": errors[:5], "seconds": seconds,
                "max_ms": round(latencies[-1] * 1e3, 3) if latencies else None, **pct}


class _FieldsFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        return f"{text} {json.dumps(fields, default=str)}" if fields else text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", required=True)
    parser.add_argument("--partners", default="")
    parser.add_argument("--data", required=True)
    parser.add_argument("--dev", action="store_true")
    parser.add_argument("--compact-entries", type=int, default=5000)
    args = parser.parse_args()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FieldsFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    password = os.environ.get("OMEGA_TEST_RAFT_PASSWORD")
    settings = RaftSettings(
        self_address=args.self,
        partners=tuple(p for p in args.partners.split(",") if p),
        log_compaction_min_entries=args.compact_entries,
        dev_mode=args.dev,
    )
    raft = ReplicatedLmdb(settings, Path(args.data),
                          password.encode() if password else None, apply,
                          databases=DATABASES)
    node = Node(raft)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req["op"] == "close":
            raft.close()
            print(json.dumps({"ok": True}), flush=True)
            return 0
        try:
            reply = node.handle(req)
        except Exception as exc:  # reported to the test, which fails on it
            reply = {"ok": False, "error": type(exc).__name__, "message": repr(exc)}
        print(json.dumps(reply), flush=True)
    raft.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
