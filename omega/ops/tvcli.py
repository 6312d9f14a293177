"""``omega-node tv observe|recommend|import-catalog|status``: a running TV, locally."""

from __future__ import annotations

import argparse
import json
import time

from omega.catalog_files import read_catalog
from omega.ops.ctl import request, resolve_control
from omega.protocol import (
    CatalogEntry,
    TvImportCatalog,
    TvObserve,
    TvOk,
    TvRecommend,
    TvRecommendReply,
    TvStatus,
)

#: Entries per TvImportCatalog frame: far below the frame cap even with descriptions.
IMPORT_CHUNK = 100


def run_tv(args: argparse.Namespace) -> int:
    address = resolve_control(
        argparse.Namespace(
            role="tv", config=args.config, data_dir=args.data_dir, control=args.control
        )
    )
    cmd = args.tv_command
    if cmd == "observe":
        ts = float(args.timestamp if args.timestamp is not None else time.time())
        reply = request(
            address,
            TvObserve(content_id=args.content_id, watch_fraction=args.watch_fraction, timestamp=ts),
            args.timeout,
        )
        assert isinstance(reply, TvOk)
        print(json.dumps(reply.payload))
    elif cmd == "recommend":
        ts = float(args.timestamp if args.timestamp is not None else time.time())
        rec = request(address, TvRecommend(k=args.k, timestamp=ts), args.timeout)
        assert isinstance(rec, TvRecommendReply)
        for rank, (cid, score, reason) in enumerate(rec.items, start=1):
            print(f"{rank:>3}  {cid:<24} {score:8.4f}  {reason}")
    elif cmd == "import-catalog":
        totals: dict[str, int] = {}
        chunk: list[CatalogEntry] = []
        for entry in read_catalog(args.path):
            chunk.append(entry)
            if len(chunk) == IMPORT_CHUNK:
                _import(address, chunk, totals, args.timeout)
                chunk = []
        if chunk:
            _import(address, chunk, totals, args.timeout)
        print(json.dumps(totals))
    elif cmd == "status":
        st = request(address, TvStatus(), args.timeout)
        assert isinstance(st, TvOk)
        print(json.dumps(st.payload, indent=2, sort_keys=True))
    return 0


def _import(
    address: str, chunk: list[CatalogEntry], totals: dict[str, int], timeout: float
) -> None:
    reply = request(address, TvImportCatalog(items=tuple(chunk)), timeout)
    assert isinstance(reply, TvOk)
    if isinstance(reply.payload, dict):
        for k, v in reply.payload.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
