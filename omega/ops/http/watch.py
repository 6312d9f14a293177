"""The hub's (or any node's) view of shard replicas: their own admin APIs, polled.

``ShardWatcher.poll()`` asks each configured shard admin API for its entry
(``GET /api/v1/shards``) and its stats (``GET /api/v1/shards/{id}/stats``) with
the node's read token, with a short timeout, and keeps the latest answer. A shard
that does not answer is listed as ``unreachable`` with the time it was last seen
— never with made-up figures.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

POLL_TIMEOUT_S = 2.0


def fetch_json(url: str, token: bytes | None, timeout_s: float) -> Any:
    """GET ``url`` → parsed JSON; raises OSError/ValueError on any failure."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token.decode())
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


class ShardWatcher:
    def __init__(self, urls: Sequence[str], token: bytes | None,
                 wall: Callable[[], float] = time.time,
                 fetch: Callable[[str, bytes | None, float], Any] = fetch_json) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self._token = token
        self._wall = wall
        self._fetch = fetch
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {
            u: {"url": u, "entry": None, "stats": None, "error": "not polled yet",
                "last_seen": None} for u in self.urls}

    def poll(self) -> None:
        for url in self.urls:
            self._poll_one(url)

    def _poll_one(self, url: str) -> None:
        try:
            listing = self._fetch(url + "/api/v1/shards", self._token, POLL_TIMEOUT_S)
            entries = listing.get("shards") or []
            if not entries:
                raise ValueError("that node lists no shard of its own")
            entry = dict(entries[0])
            stats = self._fetch(f"{url}/api/v1/shards/{quote(str(entry['id']), safe='')}/stats",
                                self._token, POLL_TIMEOUT_S)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            error = (f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError)
                     else type(exc).__name__)
            with self._lock:
                self._seen[url]["error"] = error
            return
        with self._lock:
            self._seen[url] = {"url": url, "entry": entry, "stats": stats, "error": None,
                               "last_seen": round(self._wall(), 3)}

    def shards(self) -> list[dict[str, Any]]:
        """One entry per watched URL (``status: unreachable`` when the last poll failed)."""
        out = []
        with self._lock:
            seen = [dict(v) for v in self._seen.values()]
        for s in seen:
            entry = s["entry"]
            if entry is None or s["error"] is not None:
                out.append({"id": (entry or {}).get("id") or s["url"],
                            "group": (entry or {}).get("group"),
                            "region": (entry or {}).get("region"),
                            "devices": (entry or {}).get("devices"),
                            "status": "unreachable", "source": s["url"],
                            "last_seen": s["last_seen"], "error": s["error"]})
            else:
                out.append({**entry, "source": s["url"], "last_seen": s["last_seen"],
                            "error": None})
        return out

    def stats(self, shard_id: str) -> dict[str, Any] | None:
        with self._lock:
            for s in self._seen.values():
                if s["entry"] is not None and s["entry"].get("id") == shard_id:
                    return dict(s["stats"]) if s["stats"] is not None else None
        return None
