"""The crowd loop in the local cluster: simulated TVs' sealed co-views through the
whole path (shard → aggregator → hub), a release, and a TV's recommendations
before and after it.

The simulated TVs each follow one taste (a genre of the demo catalog): they
"watch" a few of its titles, pair views close in time (``windowed_pairs``), seal
each pair to the hub's current key (learned from a pull) and push. The demo TV is
a real brain in this process (the real ONNX embedder) that pulls the release from
the shard with ``DeviceClient`` — what the TV's sync agent does on a real TV.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omega.errors import OmegaError
from omega.federation.report import HubKey, coview, seal, windowed_pairs
from omega.protocol import CatalogEntry, PullResp

Say = Callable[[str], None]


def hub_catalog_file(entries: Sequence[CatalogEntry], path: Path) -> Path:
    """The demo catalog as the hub's content file (JSON lines, no embeddings: the hub
    embeds each title with the TV's model)."""
    with path.open("w") as f:
        for e in entries:
            meta: dict[str, Any] = {"genres": list(e.genres)}
            if e.description:
                meta["description"] = e.description
            if e.year:
                meta["year"] = e.year
            f.write(json.dumps({"id": e.id, "title": e.title, "metadata": meta}) + "\n")
    return path


def tastes(entries: Sequence[CatalogEntry]) -> list[list[str]]:
    """Titles grouped by their first genre (groups of at least three)."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(e.genres[0] if e.genres else "other", []).append(e.id)
    return [g for _, g in sorted(groups.items()) if len(g) >= 3]


def device_reports(i: int, groups: Sequence[Sequence[str]], key: HubKey,
                   max_reports: int = 8) -> list[bytes]:
    """One simulated TV's push: pairs of a few titles of its taste, watched in a row."""
    rng = random.Random(i)
    group = groups[i % len(groups)]
    views = rng.sample(list(group), k=min(len(group), rng.randint(3, 5)))
    pairs = windowed_pairs([(v, 1.0) for v in views], window=3)
    rng.shuffle(pairs)
    return [seal(coview(a, b, w), key) for a, b, w in pairs[:max_reports]]


def hub_key_from(pull: PullResp) -> HubKey | None:
    return HubKey(pull.hub_key_id, pull.hub_public_key) if pull.hub_key_id else None


def pull_everything(pull: Callable[[int], PullResp], heartbeat: Callable[[], int],
                    since: int = 0, max_pulls: int = 200) -> tuple[int, PullResp, int, int]:
    """Pull from ``since`` until at the shard's version; the merged delta, the bytes
    it took and the number of pulls (always at least one: it carries the key)."""
    nb: dict[str, Any] = {}
    pop: dict[str, float] = {}
    trends: tuple[Any, ...] = ()
    version, size, pulls = since, 0, 0
    last: PullResp | None = None
    from omega.protocol import encode

    current = heartbeat()
    for _ in range(max_pulls):
        r = pull(version)
        size += len(encode(r))
        pulls += 1
        nb.update(dict(r.neighbours))
        pop.update(dict(r.popularity))
        trends = r.trends or trends
        version, last = r.global_version, r
        if version >= current:
            break
    assert last is not None
    return version, PullResp(version, tuple(nb.items()), tuple(pop.items()), trends, (),
                             last.hub_key_id, last.hub_public_key), size, pulls


class DemoTv:
    """A real brain in this process, synced by hand through ``DeviceClient``."""

    def __init__(self, root: Path, entries: Sequence[CatalogEntry], endpoints: Sequence[str],
                 fleet_key: bytes, region: str) -> None:
        from omega.brain.api import Brain
        from omega.brain.content import Content
        from omega.client import ClientSettings, DeviceClient
        from omega.protocol import derive_device_key

        self.brain = Brain.open(root)
        self.brain.add_content([Content(e.id, e.title, tuple(e.genres), e.description,
                                        e.year or None) for e in entries])
        self.titles = {e.id: e.title for e in entries}
        # A TV pulls about once a second at most (the shard's read limit): wait it out.
        self.client = DeviceClient(list(endpoints), "tv-demo",
                                   derive_device_key(fleet_key, "tv-demo"),
                                   ClientSettings(attempts=30, call_timeout_s=120.0,
                                                  wait_rate_limit_max_s=5.0))
        self.region = region
        self.now = time.time()
        self.version = 0

    def watch(self, ids: Sequence[str]) -> None:
        from omega.brain.api import ViewingEvent

        for j, cid in enumerate(ids):
            self.brain.observe(ViewingEvent(cid, 0.95, self.now - 3600 * (len(ids) - j)))

    def show(self, say: Say, label: str) -> list[str]:
        recs = self.brain.recommend(k=5, timestamp=self.now)
        say(f"tv-demo: recommendations {label}:")
        for r in recs:
            say(f"    {self.titles.get(r.content_id, r.content_id):<44} {r.score:6.3f}  "
                f"[{r.source}] {r.reason}")
        return [r.content_id for r in recs]

    def sync(self) -> tuple[int, int, int, int]:
        """Pull what changed since the last sync and merge it; (version, titles with
        lists, bytes pulled, pulls)."""
        version, delta, size, pulls = pull_everything(
            lambda since: self.client.pull(since, self.region),
            lambda: self.client.heartbeat().global_version, self.version)
        self.brain.apply_crowd({t: list(n) for t, n in delta.neighbours},
                               dict(delta.popularity), list(delta.trends), version)
        self.version = version
        return version, len(delta.neighbours), size, pulls

    def close(self) -> None:
        self.client.close()
        self.brain.close()


def ctl(control: str, command: str, target: str = "", timeout: float = 30.0) -> Any:
    from omega.ops.ctl import request
    from omega.protocol import CtlReply, CtlRequest

    reply = request(control, CtlRequest(command=command, target=target), timeout)
    if not isinstance(reply, CtlReply):
        raise OmegaError(f"{command} {target}: unexpected reply")
    return reply.payload


def try_ctl(control: str, command: str, target: str = "") -> Any:
    try:
        return ctl(control, command, target, timeout=5.0)
    except OmegaError:
        return None
