"""``omega-node tv import-catalog|observe|recommend|status``: a running TV, locally.

Each command is one or more requests on the TV node's control socket. Results go
to stdout (``recommend --json`` prints JSON lines for programs); progress and
errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from omega.catalog_files import read_catalog
from omega.errors import OmegaError
from omega.ops.ctl import RemoteError, request, resolve_control
from omega.protocol import (
    CatalogEntry,
    Message,
    TvImportCatalog,
    TvObserve,
    TvOk,
    TvRecommend,
    TvRecommendReply,
    TvStatus,
)

#: Entries per TvImportCatalog frame: far below the frame cap even with descriptions.
IMPORT_CHUNK = 100


def run_provision(args: argparse.Namespace) -> int:
    import os

    from omega.config import SecretRef, read_secret
    from omega.errors import ConfigError
    from omega.federation.report import HubKey
    from omega.sync.provision import parse_group, provision
    from omega.sync.shardmap import pick

    ref = SecretRef(env=args.fleet_key_env, file=str(args.fleet_key_file or ""))
    fleet = read_secret(ref, source="omega-node tv provision", key="fleet key")
    assert fleet is not None
    try:
        hub = HubKey(args.hub_key_id, bytes.fromhex(args.hub_public_key))
    except ValueError as exc:
        raise ConfigError("--hub-public-key", "hub key", str(exc)) from None
    groups = [parse_group(g, args.region) for g in args.group]
    done = provision(args.out, device_id=args.device_id, region=args.region, groups=groups,
                     hub=hub, hub_verify_key=args.hub_verify_key, fleet_key=fleet, tier=args.tier,
                     data_dir=args.tv_data_dir, force=args.force)
    group = pick(groups, args.device_id, args.region)
    print(json.dumps({"config": str(done.config), "device_key_file": str(done.key_file),
                      "device_key_mode": oct(os.stat(done.key_file).st_mode & 0o777),
                      "device_id": args.device_id, "region": args.region,
                      "group": group.name, "hub_key_id": hub.key_id,
                      "hub_verify_key": done.settings.hub_verify_key}, indent=2))
    return 0


def run_tv(args: argparse.Namespace) -> int:
    if args.tv_command == "provision":
        return run_provision(args)
    address = resolve_control(
        argparse.Namespace(
            role="tv", config=args.config, data_dir=args.data_dir, control=args.control
        )
    )

    def ask(msg: Message) -> Message:
        return request(address, msg, args.timeout, "tv")

    cmd = args.tv_command
    if cmd == "observe":
        ts = float(args.timestamp if args.timestamp is not None else time.time())
        try:
            reply = ask(TvObserve(content_id=args.content_id,
                                  watch_fraction=args.watch_fraction, timestamp=ts))
        except RemoteError as exc:
            if "unknown content id" in exc.reply.message:
                raise OmegaError(f"{exc.reply.message.split(' (')[0]}: import a catalog that "
                                 "holds it first (omega-node tv import-catalog FILE)") from None
            raise
        assert isinstance(reply, TvOk)
        print(json.dumps(reply.payload))
    elif cmd == "recommend":
        ts = float(args.timestamp if args.timestamp is not None else time.time())
        rec = ask(TvRecommend(k=args.k, timestamp=ts))
        assert isinstance(rec, TvRecommendReply)
        print_recommendations(rec, as_json=args.json)
    elif cmd == "import-catalog":
        print(json.dumps(import_catalog(ask, args)))
    elif cmd == "status":
        st = ask(TvStatus())
        assert isinstance(st, TvOk)
        print(json.dumps(st.payload, indent=2, sort_keys=True))
    return 0


def print_recommendations(rec: TvRecommendReply, *, as_json: bool) -> None:
    """Rank, title and reason (the order mixes relevance and variety: the rank is
    what counts, so scores are shown only with ``--json``)."""
    titles = rec.titles if len(rec.titles) == len(rec.items) else tuple(i[0] for i in rec.items)
    if not rec.items and not as_json:
        print("no recommendations: import a catalog first (tv import-catalog FILE)",
              file=sys.stderr)
    for rank, ((cid, score, reason), title) in enumerate(zip(rec.items, titles, strict=True), 1):
        if as_json:
            row = {"rank": rank, "content_id": cid, "title": title, "score": score,
                   "reason": reason}
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(f"{rank:>3}. {title}  —  {reason}" if reason else f"{rank:>3}. {title}")


def import_catalog(ask: Callable[[Message], Message], args: argparse.Namespace) -> dict[str, int]:
    """Send the catalog file in chunks, with a progress bar on stderr."""
    from tqdm import tqdm

    entries = list(read_catalog(args.path))
    totals: dict[str, int] = {"added": 0, "updated": 0, "unchanged": 0}
    with tqdm(total=len(entries), desc="importing (embedding titles)", unit="title",
              file=sys.stderr, disable=None) as bar:
        for start in range(0, len(entries), IMPORT_CHUNK):
            chunk: list[CatalogEntry] = entries[start:start + IMPORT_CHUNK]
            reply = ask(TvImportCatalog(items=tuple(chunk)))
            assert isinstance(reply, TvOk)
            if isinstance(reply.payload, dict):
                for k, v in reply.payload.items():
                    if isinstance(v, int):
                        totals[k] = totals.get(k, 0) + v
            bar.update(len(chunk))
    return totals
