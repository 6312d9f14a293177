"""The shard's store actor: owns the Raft replica (PySyncObj + LMDB) and the sync service.

It opens the replicated store in ``on_start`` (LMDB state and the Raft journal are
reloaded from disk there) and publishes the ``ShardService`` for the sync server
actor, which the supervisor starts after it (``rest_for_one``: if the store
restarts, so does the server in front of it). ``on_stop`` closes the service
first — queued pushes are answered ``unavailable``, never acknowledged — then the
replica.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from omega.actors.base import OmegaActor
from omega.protocol import ErrorReply, encode
from omega.reply import Handler, Reply

if TYPE_CHECKING:
    from omega.actors.context import NodeContext
    from omega.raft import ReplicatedLmdb
    from omega.shard import ShardService
    from omega.transport import RpcServer

log = logging.getLogger("omega.actors.store")

_UNAVAILABLE = encode(ErrorReply("unavailable", "shard store is restarting", None, 0.5))


class ShardStoreActor(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._store: ReplicatedLmdb | None = None
        self._service: ShardService | None = None

    def on_start(self) -> None:
        from omega.config import ShardConfig
        from omega.shard import ShardService, open_store

        cfg = self._ctx.cfg
        assert isinstance(cfg, ShardConfig)
        secrets = self._ctx.secrets
        self._store = open_store(
            cfg.shard, cfg.node.data_dir / "raft", secrets.get("raft_password")
        )
        self._service = ShardService(
            cfg.shard,
            self._store,
            secrets["fleet_key"],
            secrets["dedup_secret"],
            advertise=cfg.node.listen,
            name=cfg.node.name,
        ).start()
        metrics = self._ctx.resource("metrics")
        if metrics is not None and metrics.push_latency is not None:
            self._service.push_timer = metrics.push_latency.observe
        self._ctx.publish("store", self._store)
        self._ctx.publish("shard", self._service)

    def on_stop(self) -> None:
        if self._service is not None:
            self._ctx.withdraw("shard", self._service)
            self._service.close()
            self._service = None
        if self._store is not None:
            self._ctx.withdraw("store", self._store)
            self._store.close()
            self._store = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()


def shard_handler(ctx: NodeContext) -> Handler:
    """The sync server's handler: the current ShardService, looked up per request
    because a restarted store publishes a new one. A push's reply is deferred (a
    ``Pending`` the service resolves once the push is committed, or refused)."""

    def handle(frame: bytes) -> Reply:
        service = ctx.resource("shard")
        if service is None:
            return _UNAVAILABLE
        reply: Reply = service.handle(frame)
        return reply

    return handle


def device_port_hooks(ctx: NodeContext) -> Callable[[RpcServer | None], None]:
    """Wire the sync server to the node: its connection counters reach ``ctl shard``
    (published as ``sync_server``), and a leader whose device port is saturated (the
    connection cap refusing, descriptors low) hands leadership to a follower rather
    than hold the group behind a port devices cannot use."""
    current: list[RpcServer] = []

    def on_server(server: RpcServer | None) -> None:
        if server is None:
            if current:
                ctx.withdraw("sync_server", current.pop())
            return
        current[:] = [server]
        ctx.publish("sync_server", server)
        server.on_saturated = lambda reason: _saturated(ctx, reason)

    return on_server


def _saturated(ctx: NodeContext, reason: str) -> None:
    store = ctx.resource("store")
    if store is not None and store.is_leader():
        log.error("device port saturated: this leader hands leadership over", extra={
            "fields": {"reason": reason}})
        store.step_down()
