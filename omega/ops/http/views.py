"""What the admin API and the metrics show, read from the running node.

``NodeView`` wraps the node's context (config, supervision handle, published
resources) and turns what the owners already count — ``ShardService.stats()``,
``raft_status()``, the replicated store, the supervision tree, the federation
resource — into plain dicts. Nothing here is invented: a figure the node does not
have is ``None`` (and the schema says when that happens).

Rates (sync requests per minute, mean latency) are differences between samples
that ``sample()`` takes every ``[admin] poll_s``; scans of the store (devices,
storage on disk) are reused for a second or more (``_Cached``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omega.ops.http.federation import RESOURCE as FEDERATION
from omega.ops.http.federation import federation_view, json_safe
from omega.ops.http.settings import AdminSettings

if TYPE_CHECKING:
    from omega.actors.context import NodeContext

#: Store scans (every device record, every file) are reused for at least this long,
#: and for ``SCAN_COST_FACTOR`` times what the last scan took (at most 5 % of a core).
SCAN_MIN_AGE_S = 1.0
SCAN_COST_FACTOR = 20.0
#: Window of the per-minute rates.
RATE_WINDOW_S = 60.0
#: Releases shown by the API (newest last).
MAX_RELEASES = 50


def device_activity(kv: Any, now_ms: int, window_ms: int) -> tuple[int, int]:
    """(devices known, devices that pushed within ``window_ms``) from a shard's store."""
    from omega.shard import state
    from omega.shard.commands import unpack

    total = active = 0
    for _, raw in kv.iterate(state.DB, state.P_DEVICE):
        total += 1
        last_ms = unpack(raw)[3]
        if now_ms - last_ms <= window_ms:
            active += 1
    return total, active


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (allocated size: LMDB files are sparse)."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    total += min(st.st_size, st.st_blocks * 512)
            except OSError:
                continue
    return total


def request_totals(counts: dict[str, int]) -> tuple[int, dict[str, int]]:
    """(requests answered, refusals by reason) from ``ShardService.stats()["requests"]``."""
    answered = 0
    rejected: dict[str, int] = {}
    for key, n in counts.items():
        kind, _, what = key.partition(".")
        if kind == "ok":
            answered += n
        elif kind == "error":
            answered += n
            rejected[what] = rejected.get(what, 0) + n
    return answered, rejected


@dataclass
class _Sample:
    t: float
    requests: int
    latency_sum_ms: float
    latency_count: float
    push_sum_ms: float
    push_count: float


class _Cached:
    """A value recomputed when older than ``max(min_ttl, cost_factor × the time its
    last computation took)``: fresh when cheap, at most ``1 / cost_factor`` of a core
    when a scan grows long (a million device records). Thread-safe."""

    def __init__(self, clock: Callable[[], float], min_ttl: float = SCAN_MIN_AGE_S,
                 cost_factor: float = SCAN_COST_FACTOR) -> None:
        self._clock = clock
        self._min_ttl = min_ttl
        self._factor = cost_factor
        self._lock = threading.Lock()
        self._at = -1e18
        self._ttl = min_ttl
        self._value: Any = None

    def get(self, compute: Callable[[], Any]) -> Any:
        with self._lock:
            now = self._clock()
            if now - self._at >= self._ttl:
                self._value = compute()
                took = self._clock() - now
                self._at = now
                self._ttl = max(self._min_ttl, self._factor * took)
            return self._value


class NodeView:
    """Read-only views of one node for the admin API, the dashboard and the metrics."""

    def __init__(self, ctx: NodeContext, settings: AdminSettings,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._devices = _Cached(clock)
        self._storage = _Cached(clock)
        self._samples: deque[_Sample] = deque()
        self._samples_lock = threading.Lock()
        #: Set by the metrics (when on): () -> (sum ms, count) of all device requests,
        #: then of accepted pushes.
        self.latency_totals: Callable[[], tuple[float, float, float, float]] | None = None

    def now(self) -> float:
        """Wall-clock time (unix s), as the API reports it."""
        return round(self._wall(), 3)

    # -- the node ----------------------------------------------------------------------

    @property
    def role(self) -> str:
        return str(self.ctx.cfg.role)

    @property
    def name(self) -> str:
        return str(self.ctx.cfg.node.name)

    def health(self) -> dict[str, Any]:
        status = "stopping" if self.ctx.stop_requested.is_set() else "ok"
        service = self.shard_service()
        if status == "ok" and service is not None and not service.raft_status().get("leader"):
            status = "degraded"
        return {"status": status, "role": self.role, "name": self.name,
                "version": self.ctx.version, "uptime_s": round(self.ctx.uptime_s(), 3)}

    def tree(self) -> dict[str, Any] | None:
        handle = self.ctx.handle
        if handle is None:
            return None
        tree: dict[str, Any] = handle.tree()
        return tree

    def shard_service(self) -> Any:
        return self.ctx.resource("shard")

    def federation(self) -> Any:
        """Federation's hook (``status`` at least; ``trigger`` and ``add_content`` where
        the role has them), or None while it does not run here."""
        fed = self.ctx.resource(FEDERATION)
        return fed if callable(getattr(fed, "status", None)) else None

    def raft(self) -> dict[str, Any] | None:
        """This node's Raft replica: the shard's, else one published as ``"raft"``
        (an object with ``status()``), else the ``raft`` part of federation's status
        (the hub's group); None when the node has none."""
        service = self.shard_service()
        if service is not None:
            status: dict[str, Any] = service.raft_status()
            return status
        other = self.ctx.resource("raft")
        if callable(getattr(other, "status", None)):
            return json_safe(dict(other.status()))  # type: ignore[no-any-return]
        fed = self.federation()
        if fed is not None:
            part = fed.status().get("raft")
            if isinstance(part, dict) and "role" in part and "term" in part:
                return json_safe(part)  # type: ignore[no-any-return]
        return None

    # -- this shard ----------------------------------------------------------------------

    @property
    def shard_id(self) -> str:
        return self.name

    def shard_group(self) -> str:
        """The Raft group this replica is in: a stable digest of its members' addresses,
        the same on every replica (so a watcher counts a group's devices once)."""
        raft = getattr(getattr(self.ctx.cfg, "shard", None), "raft", None)
        if raft is None:
            return self.name
        members = sorted({raft.self_address, *raft.partners})
        return "group-" + hashlib.sha256("\n".join(members).encode()).hexdigest()[:10]

    def devices(self) -> tuple[int, int]:
        """(known, active) devices of this shard; (0, 0) when it has no store."""
        store = self.ctx.resource("store")
        if store is None:
            return 0, 0

        def scan() -> tuple[int, int]:
            with store.read() as kv:
                return device_activity(kv, int(self._wall() * 1000),
                                       int(self.settings.active_window_s * 1000))

        value: tuple[int, int] = self._devices.get(scan)
        return value

    def storage_bytes(self) -> int:
        value: int = self._storage.get(lambda: dir_bytes(self.ctx.cfg.node.data_dir))
        return value

    def shard_entry(self) -> dict[str, Any] | None:
        """This replica as ``GET /api/v1/shards`` lists it, or None off a shard."""
        service = self.shard_service()
        if service is None:
            return None
        raft = service.raft_status()
        total, active = self.devices()
        return {"id": self.shard_id, "group": self.shard_group(),
                "region": self.settings.region, "devices": total,
                "devices_active": active, "status": _shard_status(raft),
                "raft_role": str(raft.get("role")), "leader": raft.get("leader")}

    def sample(self) -> None:
        """Record the counters the per-minute rates are computed from (each poll)."""
        service = self.shard_service()
        if service is None:
            return
        answered, _ = request_totals(service.stats()["requests"])
        totals = self.latency_totals() if self.latency_totals else (0.0, 0.0, 0.0, 0.0)
        now = self._clock()
        with self._samples_lock:
            self._samples.append(_Sample(now, answered, *totals))
            while len(self._samples) > 2 and now - self._samples[1].t >= RATE_WINDOW_S:
                self._samples.popleft()

    def _rates(self) -> tuple[float | None, float | None, float | None]:
        """(requests per minute, mean latency ms, mean acked push latency ms) over the
        last minute; None where there is nothing to divide."""
        with self._samples_lock:
            if len(self._samples) < 2:
                return None, None, None
            first, last = self._samples[0], self._samples[-1]
        dt = last.t - first.t
        if dt <= 0:
            return None, None, None

        def mean(total: float, n: float) -> float | None:
            return round(total / n, 3) if n > 0 else None

        per_min = (last.requests - first.requests) * 60.0 / dt
        return (round(per_min, 3),
                mean(last.latency_sum_ms - first.latency_sum_ms,
                     last.latency_count - first.latency_count),
                mean(last.push_sum_ms - first.push_sum_ms, last.push_count - first.push_count))

    def shard_stats(self) -> dict[str, Any] | None:
        """``GET /api/v1/shards/{id}/stats`` for this replica, or None off a shard."""
        service = self.shard_service()
        if service is None:
            return None
        stats = service.stats()
        raft = service.raft_status()
        total, active = self.devices()
        _, rejected = request_totals(stats["requests"])
        per_min, latency, push_latency = self._rates()
        st = stats["state"]
        gc = stats["group_commit"]
        return {
            "id": self.shard_id,
            "group": self.shard_group(),
            "region": self.settings.region,
            "status": _shard_status(raft),
            "devices_total": total,
            "devices_active": active,
            "active_window_s": self.settings.active_window_s,
            "reports_stored": int(st["reports_stored"]),
            "reports_received": int(st["reports_total"]),
            "pushes_applied": int(st["pushes"]),
            "sync_requests_per_min": per_min,
            "sync_latency_ms_avg": latency,
            "push_latency_ms_avg": push_latency,
            "rejected": rejected,
            "storage_bytes": self.storage_bytes(),
            "global_version": int(st["global_version"]),
            "group_commit": {k: gc[k] for k in ("batches", "items", "mean_batch",
                                                 "largest_batch")},
            "raft": {"role": str(raft.get("role")), "term": int(raft.get("term") or 0),
                     "commit_index": int(raft.get("commit_index") or 0),
                     "leader": raft.get("leader")},
            "as_of": round(self._wall(), 3),
        }

    # -- federation ---------------------------------------------------------------------

    def federation_status(self) -> dict[str, Any]:
        """``GET /api/v1/federation``: what federation says, or ``available: false``."""
        fed = self.federation()
        if fed is None:
            return {"available": False,
                    "reason": f"federation not running on this node (role {self.role})"}
        return federation_view(dict(fed.status()))


def _shard_status(raft: dict[str, Any]) -> str:
    if raft.get("role") == "closed":
        return "stopping"
    if raft.get("leader") and raft.get("has_quorum", True):
        return "ok"
    return "degraded"
