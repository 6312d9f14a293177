"""``NodeMetrics``: one Prometheus registry per node, read mostly at scrape time.

Each node owns its own ``CollectorRegistry`` (never the process-global default),
so several nodes in one test process do not mix. Most figures are read when
Prometheus scrapes — a custom collector turns what the owners already count
(``ShardService.stats()``, Raft status, the supervision tree, the brain's status,
federation's status) into metric families — so the request path pays nothing
for them. Only two things are timed as they happen: device requests on a shard
(``timed_handler``, one histogram observation each) and recommendations on a TV.
With ``enabled=False`` the registry stays empty and nothing is timed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omega.ops.metrics import names as N
from omega.ops.metrics.histogram import FastHistogram, labelled_family
from omega.transport import Handler, Pending, Reply

if TYPE_CHECKING:
    from omega.actors.context import NodeContext
    from omega.ops.http.views import NodeView
    from omega.ops.http.watch import ShardWatcher

log = logging.getLogger("omega.ops.metrics")

#: ``ctx.publish`` name of the node's ``NodeMetrics``.
RESOURCE = "metrics"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def restarts_by_child(tree: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """(dotted path, restarts) for every node of a supervision tree."""
    yield str(tree.get("path") or tree.get("name")), int(tree.get("restarts", 0))
    for child in tree.get("children", []):
        yield from restarts_by_child(child)


class NodeMetrics:
    def __init__(self, ctx: NodeContext, *, enabled: bool = True) -> None:
        self.ctx = ctx
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=False)
        self.view: NodeView | None = None
        self.watcher: ShardWatcher | None = None
        self.sync_latency: FastHistogram | None = None  # answered at once
        self.push_latency: FastHistogram | None = None  # accepted pushes, once committed
        self.inference: FastHistogram | None = None
        self.recommendations = 0
        self._recs_lock = threading.Lock()
        if not enabled:
            return
        role = ctx.cfg.role
        if role == "shard":
            self.sync_latency = FastHistogram(N.SYNC_LATENCY_MS, "", N.LATENCY_BUCKETS_MS)
            self.push_latency = FastHistogram(N.SYNC_LATENCY_MS, "", N.LATENCY_BUCKETS_MS)
        if role == "tv":
            self.inference = FastHistogram(
                N.BRAIN_INFERENCE_MS, "Time to answer one recommend request on the TV, ms",
                N.INFERENCE_BUCKETS_MS)
        self.registry.register(_NodeCollector(self))

    @classmethod
    def for_node(cls, ctx: NodeContext) -> NodeMetrics:
        """The node's metrics, on unless ``[admin] metrics = false``."""
        admin = getattr(ctx.cfg, "admin", None)
        return cls(ctx, enabled=bool(getattr(admin, "metrics", True)))

    # -- the hot paths -------------------------------------------------------------------

    def timed_handler(self, handler: Handler) -> Handler:
        """``handler`` with the latency of each request answered at once observed
        (``kind="read"``: pulls, heartbeats, refusals); a pass-through when off.

        An accepted push's reply is deferred (a ``Pending``): the shard service times
        it itself, through ``ShardService.push_timer`` (``kind="push"``), where the
        ack is made — no extra object per push, which would cost the Raft thread and
        the garbage collector more than the timing itself.
        """
        if self.sync_latency is None:
            return handler
        observe = self.sync_latency.observe
        clock = time.perf_counter

        def timed(frame: bytes) -> Reply:
            t0 = clock()
            reply = handler(frame)
            if not isinstance(reply, Pending):
                observe((clock() - t0) * 1000.0)
            return reply

        return timed

    def observe_recommend(self, seconds: float, items: int) -> None:
        if self.inference is not None:
            self.inference.observe(seconds * 1000.0)
            with self._recs_lock:
                self.recommendations += items

    # -- reading -------------------------------------------------------------------------

    def latency_totals(self) -> tuple[float, float, float, float]:
        """(sum ms, count) of every device request, then of accepted pushes, so far."""
        if self.sync_latency is None or self.push_latency is None:
            return 0.0, 0.0, 0.0, 0.0
        read_sum, read_n = self.sync_latency.totals()
        push_sum, push_n = self.push_latency.totals()
        return read_sum + push_sum, float(read_n + push_n), push_sum, float(push_n)

    def exposition(self) -> bytes:
        """The text exposition format (what ``GET /metrics`` and ``ctl metrics`` show)."""
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    """Reads the node's own counters when Prometheus scrapes."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        sections: tuple[Callable[[], Iterator[Metric]], ...] = (
            self._timed, self._node, self._shard, self._other_raft, self._watched, self._brain,
            self._federation)
        for section in sections:
            try:
                yield from list(section())
            except Exception:  # one broken source must not hide the others
                log.exception("metrics section failed", extra={"fields": {
                    "section": section.__name__}})

    def _timed(self) -> Iterator[Metric]:
        m = self.m
        if m.sync_latency is not None and m.push_latency is not None:
            yield labelled_family(
                N.SYNC_LATENCY_MS, "Device request latency on this shard replica, ms, receipt "
                "to reply: kind=push for accepted pushes (answered once their Raft entry is "
                "committed), kind=read for what is answered at once (pulls, heartbeats, "
                "refusals)", "kind", {"push": m.push_latency, "read": m.sync_latency})
        if m.inference is not None:
            yield m.inference.family()
        if m.inference is not None:
            yield CounterMetricFamily(N.BRAIN_RECOMMENDATIONS, "Recommendations served "
                                      "(items returned)", value=m.recommendations)

    def _node(self) -> Iterator[Metric]:
        ctx = self.m.ctx
        info = GaugeMetricFamily(N.NODE_INFO, "This node (always 1)",
                                 labels=["role", "name", "version"])
        info.add_metric([ctx.cfg.role, ctx.cfg.node.name, ctx.version], 1)
        yield info
        yield GaugeMetricFamily(N.NODE_UPTIME, "Seconds since the node started",
                                value=ctx.uptime_s())
        handle = ctx.handle
        if handle is not None:
            fam = CounterMetricFamily(N.SUPERVISOR_RESTARTS,
                                      "Restarts of each actor and supervisor by its supervisor",
                                      labels=["child"])
            for path, n in restarts_by_child(handle.tree()):
                fam.add_metric([path], n)
            yield fam

    def _shard(self) -> Iterator[Metric]:
        service = self.m.ctx.resource("shard")
        view = self.m.view
        if service is None:
            return
        from omega.ops.http.views import request_totals

        stats = service.stats()
        raft = service.raft_status()
        name = self.m.ctx.cfg.node.name
        health = GaugeMetricFamily(N.SHARD_HEALTH, "1 when the shard replica has a Raft "
                                   "leader with quorum, else 0", labels=["shard"])
        health.add_metric([name], 1.0 if raft.get("leader") and raft.get("has_quorum", True)
                          else 0.0)
        yield health
        if view is not None:
            total, active = view.devices()
            yield GaugeMetricFamily(N.DEVICES_ACTIVE, "Devices that pushed within [admin] "
                                    "active_window_s", value=active)
            yield GaugeMetricFamily(N.DEVICES_TOTAL, "Devices that ever pushed to this shard",
                                    value=total)
            yield GaugeMetricFamily(N.STORAGE_BYTES, "Bytes on disk under the data directory",
                                    value=view.storage_bytes())
        st = stats["state"]
        yield CounterMetricFamily(N.PATTERNS_RECEIVED, "Sealed co-view reports received and "
                                  "stored (replicated)", value=st["reports_total"])
        yield GaugeMetricFamily(N.REPORTS_STORED, "Reports waiting to be forwarded",
                                value=st["reports_stored"])
        _, rejected = request_totals(stats["requests"])
        fam = CounterMetricFamily(N.REJECTED, "Device requests refused, by reason",
                                  labels=["reason"])
        for reason, n in sorted(rejected.items()):
            fam.add_metric([reason], n)
        yield fam
        ok = CounterMetricFamily(N.REQUESTS, "Device requests answered, by reply type",
                                 labels=["reply"])
        for key, n in sorted(stats["requests"].items()):
            if key.startswith("ok."):
                ok.add_metric([key[3:]], n)
        yield ok
        gc = stats["group_commit"]
        yield CounterMetricFamily(N.GROUP_COMMIT_BATCHES, "Raft entries proposed by group "
                                  "commit (pushes per entry = items / batches)",
                                  value=gc["batches"])
        yield CounterMetricFamily(N.GROUP_COMMIT_ITEMS, "Pushes committed through group "
                                  "commit", value=gc["items"])
        yield GaugeMetricFamily(N.GROUP_COMMIT_LARGEST, "Largest group-commit batch so far",
                                value=gc["largest_batch"])
        yield from _raft_families(raft)

    def _other_raft(self) -> Iterator[Metric]:
        """A Raft replica that is not a shard's (the hub's group), via the views."""
        view = self.m.view
        if view is None or self.m.ctx.resource("shard") is not None:
            return
        raft = view.raft()
        if raft is not None:
            yield from _raft_families(raft)

    def _watched(self) -> Iterator[Metric]:
        watcher = self.m.watcher
        if watcher is None or not watcher.urls:
            return
        shards = watcher.shards()
        health = GaugeMetricFamily(N.SHARD_HEALTH, "1 when the watched shard replica answers "
                                   "and has a Raft leader, else 0", labels=["shard"])
        groups: dict[str, tuple[int, int]] = {}
        for s in shards:
            health.add_metric([str(s["id"])], 1.0 if s["status"] == "ok" else 0.0)
            if s["status"] != "unreachable":
                stats = watcher.stats(str(s["id"])) or {}
                group = str(s.get("group") or s["id"])
                groups[group] = max(groups.get(group, (0, 0)),
                                    (int(s.get("devices_active") or 0),
                                     int(stats.get("reports_received") or 0)))
        if self.m.ctx.resource("shard") is None:  # a shard reports its own
            yield health
            yield GaugeMetricFamily(N.DEVICES_ACTIVE, "Active devices over the watched shard "
                                    "groups", value=sum(a for a, _ in groups.values()))
            yield CounterMetricFamily(N.PATTERNS_RECEIVED, "Reports received by the watched "
                                      "shard groups", value=sum(r for _, r in groups.values()))

    def _brain(self) -> Iterator[Metric]:
        if self.m.ctx.cfg.role != "tv":
            return
        yield GaugeMetricFamily(N.BRAIN_MEMORY_MB, "Resident memory of the TV's node "
                                "process, MB", value=rss_mb())
        brain = self.m.ctx.resource("brain")
        if brain is not None:
            yield GaugeMetricFamily(N.BRAIN_PATTERNS, "Patterns in the brain's skill library",
                                    value=int(brain.status()["patterns"]))

    def _federation(self) -> Iterator[Metric]:
        view = self.m.view
        if view is None:
            return
        fed = view.federation_status()
        if not fed.get("available"):
            return
        if fed.get("rounds") is not None:
            yield CounterMetricFamily(N.FEDERATION_ROUNDS, "Federation rounds completed",
                                      value=fed["rounds"])
        if fed.get("epsilon_spent") is not None:
            yield GaugeMetricFamily(N.FEDERATION_EPSILON, "Total epsilon of the releases",
                                    value=fed["epsilon_spent"])
        if fed.get("reports_received") is not None:
            yield CounterMetricFamily(N.FEDERATION_REPORTS, "Sealed reports received by "
                                      "federation on this node", value=fed["reports_received"])


def _raft_families(raft: dict[str, Any]) -> Iterator[Metric]:
    """Term, indexes, leadership of a Raft replica's ``status()``."""
    yield GaugeMetricFamily(N.RAFT_TERM, "Raft term", value=int(raft.get("term") or 0))
    yield GaugeMetricFamily(N.RAFT_COMMIT_INDEX, "Raft commit index",
                            value=int(raft.get("commit_index") or 0))
    yield GaugeMetricFamily(N.RAFT_APPLIED_INDEX, "Raft index applied to LMDB here",
                            value=int(raft.get("applied_index") or 0))
    yield GaugeMetricFamily(N.RAFT_IS_LEADER, "1 on the Raft leader",
                            value=1.0 if raft.get("role") == "leader" else 0.0)
    yield CounterMetricFamily(N.RAFT_LEADER_CHANGES, "Times this replica became or "
                              "stopped being leader",
                              value=int(raft.get("leadership_transitions") or 0))
