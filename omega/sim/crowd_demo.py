"""The crowd loop in the local cluster: simulated TVs' sealed co-views through the
whole path (shard → aggregator → hub), a release, and a TV's recommendations
before and after it.

The simulated TVs each follow one taste (a genre of the demo catalog): they
"watch" a few of its titles, pair views close in time (``windowed_pairs``), seal
each pair to the hub's current key and push. The demo TV is the real tv node
(``omega-node --role tv``), provisioned with ``omega.sync.provision`` and synced by
its own SyncAgent (``omega/sim/cluster.py``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omega.errors import OmegaError
from omega.federation.report import HubKey, coview, seal, windowed_pairs
from omega.protocol import CatalogEntry


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
