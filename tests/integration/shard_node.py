"""A bare shard replica process: config → ReplicatedLmdb + ShardService + RpcServers.

    python tests/integration/shard_node.py --config shard.toml

Reads the same TOML as ``omega-node --role shard`` (``omega.config.load_config``)
and the same secrets from the environment, but composes the parts directly,
without actors, so that the shard's tests and benchmark exercise exactly the
store, the service and the transport. Besides the device-facing socket it serves
a control socket (``[node] control``) answering ``CtlRequest``:
``raft`` (``ShardService.raft_status()``), ``shard`` (stats and state digest),
``global N`` (publish a synthetic release of N titles, on the leader), ``global
announce:VERSION:KEY_ID:PUBLIC_HEX:SIG_HEX`` (a release of one title announcing that
hub key with that signature: what a hostile shard operator could inject), ``health``,
``stop``. SIGTERM/SIGINT: orderly close, exit 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omega.config import ShardConfig, load_config, read_role_secrets
from omega.errors import OmegaError, ProtocolError
from omega.log import setup_logging
from omega.protocol import (
    CtlReply,
    CtlRequest,
    ErrorReply,
    GlobalUpdate,
    decode,
    encode,
)
from omega.shard import ShardService, open_store
from omega.transport import RpcServer

log = logging.getLogger("omega.shard.node")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--profile", type=Path, help="write per-thread CPU profiles (pstats) here")
    args = p.parse_args()
    profiles = _profile_threads() if args.profile else None
    cfg = load_config("shard", args.config)
    assert isinstance(cfg, ShardConfig)
    setup_logging(cfg.node.log_level, node=cfg.node.name)
    secrets = read_role_secrets(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    store = open_store(cfg.shard, cfg.node.data_dir / "raft", secrets.get("raft_password"))
    service = ShardService(cfg.shard, store, secrets["fleet_key"], secrets["dedup_secret"],
                           advertise=cfg.node.listen, name=cfg.node.name).start()

    def control(frame: bytes) -> bytes:
        try:
            msg = decode(frame, allowed=(CtlRequest,))
            assert isinstance(msg, CtlRequest)
            payload: Any
            if msg.command == "raft":
                payload = service.raft_status()
            elif msg.command == "shard":
                index, digest = store.state_digest()
                payload = {**service.stats(), "applied_index": index, "state_hash": digest}
            elif msg.command == "global":
                # Test and benchmark scaffolding: publish a synthetic global release.
                target = msg.target or "100"
                update = announce_update(target) if target.startswith("announce:") \
                    else synthetic_update(int(target))
                payload = {"result": list(service.set_global_update(update))}
            elif msg.command == "health":
                payload = {"ok": True}
            elif msg.command == "stop":
                stop.set()
                payload = {"stopping": True}
            else:
                raise ProtocolError(f"unknown command {msg.command!r}")
            return encode(CtlReply(ok=True, payload=_jsonable(payload)))
        except OmegaError as exc:
            return encode(ErrorReply.from_error(exc))

    sync = RpcServer(cfg.node.listen, service.handle, cfg.transport, service.on_error,
                     name="sync").start()
    # A few workers answer the control socket: every idle worker wakes 4 times a
    # second, and 128 idle ones cost ~6 % of a core on each replica.
    ctl_transport = dataclasses.replace(cfg.transport, workers=min(4, cfg.transport.workers))
    ctl = RpcServer(cfg.node.control_address, control, ctl_transport,
                    lambda e: encode(ErrorReply.from_error(e)), name="control").start()
    log.info("shard node ready", extra={"fields": {"listen": sync.address,
                                                   "raft": cfg.shard.raft.self_address}})
    while not stop.wait(0.2):
        pass
    ctl.close()
    sync.close()
    service.close()
    store.close()
    if profiles is not None:
        _dump_profiles(profiles, args.profile)
    log.info("shard node stopped")
    return 0


def synthetic_update(titles: int, version: int = 1) -> GlobalUpdate:
    """A release of ``titles`` titles with 20 neighbours each, popularity and trends."""
    names = [f"title-{i:06d}" for i in range(titles)]
    neighbours = tuple((names[i], tuple((names[(i * 7 + j + 1) % titles], 1.0 / (j + 1))
                                        for j in range(min(20, titles - 1))))
                       for i in range(titles))
    popularity = tuple((n, float(titles - i)) for i, n in enumerate(names))
    trends = (("eu", tuple((n, 1.0) for n in names[:20])),)
    return GlobalUpdate(version, neighbours[:2000], popularity[:2000], trends)


def announce_update(target: str) -> GlobalUpdate:
    """``announce:VERSION:KEY_ID:PUBLIC_HEX:SIG_HEX`` → a one-title release naming that key."""
    _, version, key_id, public, sig = target.split(":")
    return GlobalUpdate(int(version), popularity=((f"title-v{version}", 1.0),),
                        hub_key_id=int(key_id), hub_public_key=bytes.fromhex(public),
                        hub_key_sig=bytes.fromhex(sig))


def _profile_threads() -> list[Any]:
    """CPU-time profile of every thread started from now on (benchmark diagnostics)."""
    import cProfile
    import time

    profiles: list[Any] = []

    def start(*_: Any) -> None:
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()  # replaces this hook for the thread

    threading.setprofile(start)
    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    main.enable()
    return profiles


def _dump_profiles(profiles: list[Any], path: Path) -> None:
    import pstats

    for prof in profiles:
        prof.disable()
    stats = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        try:
            stats.add(prof)
        except TypeError:  # a thread that never ran Python code
            continue
    stats.dump_stats(str(path))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return tuple(_jsonable(v) for v in obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
