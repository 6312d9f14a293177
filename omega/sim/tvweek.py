"""A week of one TV, simulated in process: the real brain (fast embedder), the real
``SyncCore`` and ``DeviceClient`` talking to the real shard service, on a simulated
clock. Every frame the TV sends is recorded (``RecordingRequester``).

Used by ``bench/wire.py`` (bytes per push and per pull) and by the privacy tests
(nothing of the viewing in clear; frame count and size independent of viewing).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omega.brain.api import Brain, Content, ViewingEvent
from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings
from omega.client import ClientSettings
from omega.federation.report import HubKey
from omega.protocol import GlobalUpdate, NewContent, derive_device_key
from omega.protocol.vectors import embedding_to_wire
from omega.shard import ShardService
from omega.sim.shardsim import Frame, RecordingRequester, SimClock, in_process_shard
from omega.sync.core import SyncCore
from omega.sync.link import DeviceLink
from omega.sync.settings import ShardGroup, SyncSettings

__all__ = ["WeekResult", "daily_release", "simulate_week"]

FLEET = b"simulated-fleet-key-0123456789abcdef"
DEDUP = b"simulated-dedup-secret-0123456789ab"
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DAY = 86_400.0


@dataclass
class WeekResult:
    device_id: str
    frames: list[Frame]
    status: dict[str, Any]
    views: list[tuple[str, float, float]] = field(default_factory=list)


def daily_release(day: int, titles: Sequence[str], rng: random.Random, *, changed: int = 150,
                  new: int = 2) -> GlobalUpdate:
    """A day's release: ``changed`` titles' top-20 lists and popularity, a few new titles."""
    pick = rng.sample(list(titles), min(changed, len(titles)))
    neighbours = tuple((t, tuple((n, round(rng.random(), 4))
                                 for n in rng.sample([x for x in titles if x != t], 20)))
                       for t in pick)
    popularity = tuple((t, float(rng.randint(1, 5000))) for t in pick)
    trends = (("local", tuple((t, round(rng.random() * 5, 3)) for t in pick[:20])),)
    vecs = np.random.default_rng(day).standard_normal((new, 384)).astype(np.float32)
    content = tuple(NewContent(f"new-{day}-{i}", f"New title {day}.{i}",
                               embedding_to_wire(v / np.linalg.norm(v)))
                    for i, v in enumerate(vecs))
    return GlobalUpdate(day + 1, neighbours, popularity, trends, content)


def simulate_week(data_dir: Path, views: Sequence[tuple[str, float]], catalog: Sequence[str], *,
                  device_id: str = "tv-sim", days: int = 7, seed: int = 0,
                  service: ShardService | None = None, clock: SimClock | None = None,
                  hub: HubKey | None = None, releases: bool = True,
                  **sync: Any) -> WeekResult:
    """Replay ``views`` (content id, watch fraction) spread over ``days`` evenings."""
    rng = random.Random(seed)
    clock = clock or SimClock(T0)
    hub = hub or HubKey.generate(1)
    svc = service or in_process_shard(FLEET, DEDUP, clock)
    brain = Brain.open(data_dir, BrainSettings(durability="nosync"), embedder=HashEmbedder(),
                       wall=clock)
    try:
        if not brain.content_ids():
            brain.add_content([Content(id=c, title=f"Title {c}") for c in catalog])
        opts: dict[str, Any] = {"enabled": True, "device_id": device_id, "region": "local",
                                "groups": (ShardGroup("g1", "local", ("inproc://sim",)),),
                                "hub_key_id": hub.key_id, "hub_public_key": hub.public.hex()}
        opts.update(sync)
        settings = SyncSettings(**opts)
        requester = RecordingRequester(svc, clock)
        key = derive_device_key(FLEET, device_id)

        def connect(group: ShardGroup) -> DeviceLink:
            return DeviceLink(group, device_id, key, ClientSettings(), requester=requester,
                              wall=clock)

        core = SyncCore(brain, settings, connect, wall=clock, mono=clock,
                        rng=random.Random(rng.random()))
        # Views in the evenings (18:00-23:00), evenly over the days, in order.
        per_day = [list(views[d * len(views) // days:(d + 1) * len(views) // days])
                   for d in range(days)]
        events: list[tuple[float, str, Any]] = []
        for d, todays in enumerate(per_day):
            for i, (cid, frac) in enumerate(todays):
                events.append((T0 + d * DAY + 18 * 3600 + i * 5 * 3600 / max(1, len(todays)),
                               "view", (cid, frac)))
            if releases:
                events.append((T0 + d * DAY + 3 * 3600, "release", d))
        events.sort(key=lambda e: e[0])
        end = T0 + days * DAY
        done: list[tuple[str, float, float]] = []
        i = 0
        while clock.t < end:
            while i < len(events) and events[i][0] <= clock.t:
                _, kind, arg = events[i]
                if kind == "view":
                    brain.observe(ViewingEvent(arg[0], arg[1], clock.t))
                    done.append((arg[0], arg[1], clock.t))
                elif service is None:  # a shared service gets its releases from the caller
                    svc.set_global_update(daily_release(arg, catalog, rng))
                i += 1
            sleep = core.tick()
            nxt = events[i][0] if i < len(events) else end
            clock.t = max(clock.t + 1e-3, min(clock.t + sleep, nxt, end))
        result = WeekResult(device_id, requester.frames, core.status(), done)
        core.close()
        return result
    finally:
        brain.close()
        if service is None:
            svc.close()
