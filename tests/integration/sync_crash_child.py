"""A TV's sync loop as a child process, for kill -9 tests: the real brain (fast
embedder), the real ``SyncCore`` and ``DeviceLink`` against a real shard group.

Each run observes the next view of a fixed sequence (while any is left), syncs,
and prints one JSON line per sync; it exits 0 with a ``done`` line once every view
is observed, reported and acknowledged. Killed at any moment, the next run resumes
from the brain's LMDB.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omega.brain.api import ViewingEvent
from omega.client import ClientSettings
from omega.federation.report import HubKey
from omega.protocol import derive_device_key
from omega.sync.core import SyncCore
from omega.sync.link import DeviceLink
from omega.sync.settings import ShardGroup
from tests.integration.shard_harness import FLEET_KEY
from tests.sync_support import open_brain, sync_settings

T0 = 1_700_000_000.0


def view(k: int) -> str:
    return f"m{(k * 7) % 30}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brain", type=Path, required=True)
    ap.add_argument("--endpoints", nargs="+", required=True)
    ap.add_argument("--hub", required=True, help="hub public key, hex (key id 1)")
    ap.add_argument("--views", type=int, required=True)
    ap.add_argument("--device", default="tv-crash")
    args = ap.parse_args()
    hub = HubKey(1, bytes.fromhex(args.hub))
    brain = open_brain(args.brain)
    group = ShardGroup("g1", "local", tuple(args.endpoints))
    settings = sync_settings(hub, device_id=args.device, groups=(group,), daily_budget=10_000)
    key = derive_device_key(FLEET_KEY, args.device)
    core = SyncCore(brain, settings, lambda g: DeviceLink(
        g, args.device, key, ClientSettings(request_timeout_s=1.0, call_timeout_s=3.0)))
    pause = threading.Event()
    while True:
        seen = int(brain.status()["episodes"])
        if seen < args.views:
            brain.observe(ViewingEvent(view(seen), 1.0 if seen % 3 else 0.5, T0 + 60 * seen))
        out = core.sync()
        st = core.status()
        print(json.dumps({"views": seen, "error": out.error, "queue": st["queue"],
                          "built": st["reports_built"], "pushed": st["reports_pushed"]}),
              flush=True)
        if seen >= args.views and not out.error and st["queue"] == 0:
            print(json.dumps({"done": True, "built": st["reports_built"]}), flush=True)
            break
        pause.wait(out.retry_in_s if out.error else 0.01)
    core.close()
    brain.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
