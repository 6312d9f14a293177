"""The federation actors of the shard, aggregator and hub roles. Thin on purpose.

Each owns its resources (sockets, LMDB, the hub's Raft replica) and one loop
thread that runs the role's periodic work on its interval; the logic is in
``omega.federation`` (``forward``, ``aggregator``, ``hubservice``). Each publishes
a ``federation`` resource with ``status()``, ``trigger()`` (and ``add_content``,
``rotate_key`` on the hub) for ``ctl federation`` and the admin API.

- ``ShardFederationActor``: on the shard leader, forwards closed buckets to the
  aggregator and applies the hub's releases (Pub/Sub, plus catch-up by version).
- ``AggregatorActor``: the shuffle store and its rounds; serves ``ShardBatch``.
- ``HubActor``: the hub's Raft replica and service; on the leader, the first key
  and the releases; on every replica, the broadcast of each new release.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from omega.actors.base import OmegaActor
from omega.errors import OmegaError
from omega.protocol import ErrorReply, GlobalUpdate, Unavailable, decode, encode

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from omega.actors.context import NodeContext
    from omega.federation.aggregator import AggregatorService
    from omega.federation.hubservice import HubService
    from omega.federation.shuffle import ShuffleStore
    from omega.raft import ReplicatedLmdb
    from omega.shard.state import ReportBatch
    from omega.transport import Handler, Publisher, Subscriber

log = logging.getLogger("omega.actors.federation")

#: How often a loop thread wakes to look at its clocks.
_TICK_S = 0.05


class _Loop:
    """A daemon thread running ``step()`` every ``_TICK_S`` until stopped."""

    def __init__(self, name: str, step: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._step = step
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_TICK_S):
            try:
                self._step()
            except Exception:  # keep going: the next tick retries
                if not self._stop.is_set():  # (closing its sockets ends a step too)
                    log.exception("federation step failed")

    def signal(self) -> None:
        """Ask the loop to end after its current step (``stop`` waits for it)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)


class _Every:
    """Is an interval due? (monotonic clock)."""

    def __init__(self, interval_s: float) -> None:
        self.interval = interval_s
        self.next = time.monotonic() + interval_s

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + self.interval
        return True


# -- shard -------------------------------------------------------------------------


class _CurrentShard:
    """The shard service the store actor publishes now (it is replaced on restart)."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def _svc(self) -> Any:
        svc = self._ctx.resource("shard")
        if svc is None:
            raise Unavailable("shard store is restarting")
        return svc

    def is_leader(self) -> bool:
        svc = self._ctx.resource("shard")
        return bool(svc is not None and svc.is_leader())

    def take_batch(self, min_devices: int | None = None) -> ReportBatch | None:
        batch: ReportBatch | None = self._svc().take_batch(min_devices)
        return batch

    def release_batch(self, bucket: int) -> Any:
        return self._svc().release_batch(bucket)

    def close_open_bucket(self, min_devices: int | None = None) -> Any:
        return self._svc().close_open_bucket(min_devices)

    def set_global_update(self, update: GlobalUpdate, timeout_s: float | None = None
                          ) -> tuple[str, int]:
        out: tuple[str, int] = self._svc().set_global_update(update, timeout_s)
        return out

    def release_versions(self) -> tuple[int, int]:
        out: tuple[int, int] = self._svc().release_versions()
        return out


class ShardFederationActor(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._subs: list[Subscriber] = []
        self._threads: list[_Loop] = []
        self._closers: list[Callable[[], None]] = []

    def on_start(self) -> None:
        from omega.config import ShardConfig
        from omega.federation.forward import ReleaseFollower, ShardForwarder
        from omega.federation.upstream import Upstream
        from omega.protocol import BatchAck
        from omega.transport import Subscriber

        cfg = self._ctx.cfg
        assert isinstance(cfg, ShardConfig)
        fs = cfg.shard.federation
        transport = replace(cfg.transport, request_timeout_s=fs.request_timeout_s, retries=1)
        shard = _CurrentShard(self._ctx)
        self.forwarder = None
        if fs.aggregator:
            agg = Upstream(fs.aggregator, transport, name="aggregator")
            self._closers.append(agg.close)
            self.forwarder = ShardForwarder(shard, lambda m: agg.call(m, BatchAck))
        self.follower = ReleaseFollower(shard, None)
        if fs.hub:
            hub = Upstream(fs.hub, transport, name="hub")
            self._closers.append(hub.close)
            self.follower = ReleaseFollower(shard, partial(hub.call, expect=GlobalUpdate))
        for address in fs.hub_publish:
            sub = Subscriber(address, cfg.transport, recv_max_size=1 << 20)
            self._subs.append(sub)
            loop = _Loop("omega-fed-sub", lambda s=sub: self._receive(s))  # type: ignore[misc]
            self._threads.append(loop)
        self._forward_every = _Every(fs.forward_interval_s)
        self._catch_up_every = _Every(fs.catch_up_interval_s)
        self.last_forward: dict[str, Any] = {}
        self.errors = 0
        self._threads.append(_Loop("omega-fed-shard", self._step))
        for t in self._threads:
            t.start()
        self._ctx.publish("federation", self)

    def _receive(self, sub: Subscriber) -> None:
        frame = sub.recv(0.2)
        if frame is None:
            return
        try:
            msg = decode(frame, allowed=(GlobalUpdate,))
        except OmegaError as exc:
            log.warning("bad broadcast", extra={"fields": {"error": str(exc)}})
            return
        assert isinstance(msg, GlobalUpdate)
        self.follower.on_broadcast(msg)

    def _step(self) -> None:
        if self.forwarder is not None and self._forward_every.due():
            self._forward(close_open=False)
        if self._catch_up_every.due():
            try:
                self.follower.catch_up()
            except (OmegaError, OSError) as exc:
                self.errors += 1
                log.info("catch-up failed", extra={"fields": {"error": str(exc)}})

    def _forward(self, close_open: bool) -> dict[str, Any]:
        assert self.forwarder is not None
        try:
            r = self.forwarder.forward(close_open)
            self.last_forward = {"time": time.time(), "batches": r.batches, "parts": r.parts,
                                 "reports": r.reports, "skipped": r.skipped}
        except (OmegaError, OSError) as exc:
            self.errors += 1
            self.last_forward = {"time": time.time(), "error": f"{type(exc).__name__}: {exc}"}
            log.info("forward failed", extra={"fields": self.last_forward})
        return dict(self.last_forward)

    def on_stop(self) -> None:
        self._ctx.withdraw("federation", self)
        for t in self._threads:
            t.signal()  # then a closed subscriber ends its loop instead of failing it
        for s in self._subs:
            s.close()
        for t in self._threads:
            t.stop()
        for close in self._closers:
            close()

    def on_failure(self, *_: object) -> None:
        self.on_stop()

    # -- the ops hook (called from other threads) --------------------------------------

    def status(self) -> dict[str, Any]:
        shard = _CurrentShard(self._ctx)
        svc = self._ctx.resource("shard")
        state = svc.stats()["state"] if svc is not None else {}
        buckets, in_buckets = svc.held_buckets() if svc is not None else (0, 0)
        return {
            "role": "shard", "leader": shard.is_leader(),
            "reports_held": state.get("reports_stored"),
            "batches_held": buckets, "reports_in_held_batches": in_buckets,
            "batches_forwarded": self.forwarder.forwarded_batches if self.forwarder else 0,
            "reports_forwarded": self.forwarder.forwarded_reports if self.forwarder else 0,
            "last_forward": self.last_forward,
            "release": state.get("release"), "release_complete": state.get("release_complete"),
            "broadcasts_applied": self.follower.broadcasts_applied,
            "catch_ups": self.follower.catchups, "errors": self.errors,
        }

    def trigger(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.forwarder is not None:
            out["forward"] = self._forward(close_open=True)
        try:
            out["caught_up_to"] = self.follower.catch_up()
        except (OmegaError, OSError) as exc:
            out["catch_up_error"] = str(exc)
        return out


# -- aggregator ----------------------------------------------------------------------


class AggregatorActor(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._store: ShuffleStore | None = None
        self._loop: _Loop | None = None
        self._closers: list[Callable[[], None]] = []
        self.service: AggregatorService | None = None

    def on_start(self) -> None:
        from omega.config import AggregatorConfig
        from omega.federation.aggregator import AggregatorService
        from omega.federation.shuffle import ShuffleStore
        from omega.federation.upstream import Upstream
        from omega.protocol import BatchAck

        cfg = self._ctx.cfg
        assert isinstance(cfg, AggregatorConfig)
        s = cfg.aggregator
        self._store = ShuffleStore(cfg.node.data_dir / "shuffle.mdb", map_size=s.map_size,
                                   max_held_reports=s.max_held_reports, retention_s=s.retention_s)
        send = None
        if s.hub:
            hub = Upstream(s.hub, replace(cfg.transport, request_timeout_s=s.request_timeout_s,
                                          retries=1), name="hub")
            self._closers.append(hub.close)
            send = partial(hub.call, expect=BatchAck)
        self.service = AggregatorService(s, self._store, send, name=cfg.node.name)
        every = _Every(s.interval_s)
        service = self.service

        def step() -> None:
            if every.due():
                service.round()

        self._loop = _Loop("omega-fed-agg", step)
        self._loop.start()
        self._ctx.publish("aggregator", self.service)
        self._ctx.publish("federation", self.service)

    def on_stop(self) -> None:
        if self.service is not None:
            self._ctx.withdraw("federation", self.service)
            self._ctx.withdraw("aggregator", self.service)
        if self._loop is not None:
            self._loop.stop()
        for close in self._closers:
            close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()


# -- hub -----------------------------------------------------------------------------


class _LazyEmbedder:
    """The TV's ONNX embedder, loaded on the first title that needs it."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._embedder: Any = None
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        from omega.brain.onnx_embedder import OnnxEmbedder
        from omega.config import HubConfig

        cfg = self._ctx.cfg
        assert isinstance(cfg, HubConfig)
        with self._lock:
            if self._embedder is None:
                self._embedder = OnnxEmbedder.from_settings(cfg.hub.embedder,
                                                            cfg.node.data_dir / "models")
            out: npt.NDArray[np.float32] = self._embedder.embed_catalog(list(texts))
            return out


class HubActor(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._store: ReplicatedLmdb | None = None
        self._publisher: Publisher | None = None
        self._loop: _Loop | None = None
        self.service: HubService | None = None
        self._published = 0
        self._was_leader = False

    def on_start(self) -> None:
        from omega.config import HubConfig
        from omega.federation import hub
        from omega.federation.hubservice import HubService
        from omega.federation.publish import fold
        from omega.raft import ReplicatedLmdb
        from omega.transport import Publisher

        cfg = self._ctx.cfg
        assert isinstance(cfg, HubConfig)
        s = cfg.hub
        self._store = ReplicatedLmdb(s.raft, cfg.node.data_dir / "raft",
                                     self._ctx.secrets.get("raft_password"),
                                     hub.make_apply(fold), databases=hub.DATABASES)
        self.service = HubService(s, s.release, self._store, embed=_LazyEmbedder(self._ctx),
                                  name=cfg.node.name)
        if s.publish:
            self._publisher = Publisher(s.publish, cfg.transport).start()
        self._release_every = _Every(s.release_interval_s)
        self._loop = _Loop("omega-fed-hub", self._step)
        self._loop.start()
        self._ctx.publish("hub", self.service)
        self._ctx.publish("federation", self)

    def _step(self) -> None:
        svc = self.service
        assert svc is not None
        leader = svc.is_leader()
        if leader and not self._was_leader:
            try:
                svc.ensure_key()  # a new group makes its first key and announces it
            except OmegaError as exc:
                log.info("no key yet", extra={"fields": {"error": str(exc)}})
                leader = False
        self._was_leader = leader
        if leader and self._release_every.due():
            svc.release()
        self._broadcast()

    def _broadcast(self) -> None:
        """Every replica broadcasts each new release it applied (shards subscribe to
        all of them; a duplicate part is a no-op on the shard)."""
        if self._publisher is None or self.service is None:
            return
        parts = self.service.release_parts()
        if not parts or parts[0].version <= self._published:
            return
        for p in parts:
            self._publisher.publish(encode(p))
        self._published = parts[0].version

    def on_stop(self) -> None:
        if self.service is not None:
            self._ctx.withdraw("federation", self)
            self._ctx.withdraw("hub", self.service)
        if self._loop is not None:
            self._loop.stop()
        if self.service is not None:
            self.service.close()
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()

    # -- the ops hook ------------------------------------------------------------------

    def _svc(self) -> HubService:
        if self.service is None:
            raise Unavailable("hub is starting")
        return self.service

    def status(self) -> dict[str, Any]:
        out = self._svc().status()
        out["raft"] = self._store.status() if self._store is not None else {}
        out["broadcast_version"] = self._published
        return out

    def trigger(self, version: int | None = None) -> dict[str, Any]:
        return self._svc().release(version=version)

    def rotate_key(self, key_id: int | None = None) -> dict[str, Any]:
        return self._svc().rotate_key(key_id)

    def add_content(self, items: Sequence[Any]) -> dict[str, Any]:
        return self._svc().add_content(items)


def resource_handler(ctx: NodeContext, name: str) -> Handler:
    """The network server's handler: the service ``name`` published now (replaced
    when its actor restarts)."""
    busy = encode(ErrorReply("unavailable", f"{name} is restarting", None, 0.5))

    def handle(frame: bytes) -> bytes:
        svc = ctx.resource(name)
        if svc is None:
            return busy
        out: bytes = svc.handle(frame)
        return out

    return handle
