"""Each role's supervision tree, as a pure function of the config.

``tree_for(cfg, ctx)`` only builds specs (data); nothing starts until
``start_tree``. Children are listed in start order; strategies say what a crash
takes down with it:

- shard: ``rest_for_one`` over store → sync → control: the sync server serves the
  store's service, so it restarts after the store does; control restarts alone.
- tv: ``rest_for_one`` over brain → sync (when ``[sync] enabled``) → control (the local
  API asks the brain).
- shard also runs ``federation`` (forwarding to the aggregator, following the hub)
  after control: it only uses the store's published service, so it restarts alone.
- aggregator: ``rest_for_one`` over aggregator → api → control (the api serves the
  aggregator's shuffle store); hub: the same over hub → api → control (the api
  serves the hub's Raft replica).
- shard, aggregator, hub with ``[admin] listen`` set: an ``admin`` child last (the
  admin REST API, metrics and dashboard over HTTP); it looks everything up per
  request, so it restarts alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from omega.actors.rpc import RpcServerActor
from omega.actors.spec import ChildSpec, Strategy, SupervisorSpec
from omega.config import AggregatorConfig, HubConfig, ShardConfig, TvConfig
from omega.ops.control import ControlHandler, error_reply, health_only_handler
from omega.protocol.limits import MAX_FRAME_BYTES
from omega.reply import Handler
from omega.transport_settings import TransportSettings

if TYPE_CHECKING:
    from omega.actors.context import NodeContext
    from omega.config import NodeConfig
    from omega.transport import RpcServer


CONTROL_WORKERS = 4
TV_CONTROL_WORKERS = 1


def _rpc_server(name: str, address: str, handler: Handler, transport: TransportSettings,
                shutdown_s: float,
                on_server: Callable[[RpcServer | None], None] | None = None) -> ChildSpec:
    """A supervised request/reply server (``RpcServerActor``) answering with ``handler``."""
    return ChildSpec(
        name=name,
        start=partial(RpcServerActor.start, name, address, handler, error_reply, transport,
                      on_server=on_server),
        shutdown_s=shutdown_s,
    )


def _timed(ctx: NodeContext, handler: Handler) -> Handler:
    """The device handler, timed into the node's metrics when they are on."""
    metrics = ctx.resource("metrics")
    return metrics.timed_handler(handler) if metrics is not None else handler


def tree_for(cfg: NodeConfig, ctx: NodeContext) -> SupervisorSpec:
    sup = cfg.supervision
    shutdown = max(0.1, min(cfg.node.shutdown_timeout_s / 2, 5.0))
    # Operators and the TV's UI send a request at a time; idle workers cost CPU.
    # A TV is idle most of the time and every idle worker wakes 4 times a second
    # (omega.transport.server): its UI's requests share one (docs/benchmarks.md, TV idle).
    workers = TV_CONTROL_WORKERS if isinstance(cfg, TvConfig) else CONTROL_WORKERS
    control = _rpc_server("control", cfg.node.control_address, ControlHandler(ctx).handle,
                          replace(cfg.transport, workers=workers), shutdown)
    # Aggregator, hub and a TV given a listen address answer health there.
    health_api = _rpc_server("api", cfg.node.listen, health_only_handler(ctx), cfg.transport,
                             shutdown)
    children: list[ChildSpec | SupervisorSpec]
    strategy: Strategy
    if isinstance(cfg, ShardConfig):
        from omega.actors.federation import ShardFederationActor
        from omega.actors.store import ShardStoreActor, device_port_hooks, shard_handler

        children = [
            ChildSpec(
                name="store",
                start=partial(ShardStoreActor.start, ctx),
                shutdown_s=shutdown,
                start_timeout_s=60.0,
            ),
            _rpc_server("sync", cfg.node.listen, _timed(ctx, shard_handler(ctx)),
                        cfg.transport, shutdown, device_port_hooks(ctx)),
            control,
            ChildSpec(name="federation", start=partial(ShardFederationActor.start, ctx),
                      shutdown_s=shutdown),
        ]
        strategy = "rest_for_one"
    elif isinstance(cfg, TvConfig):
        from omega.actors.brain import BrainActor

        children = [
            ChildSpec(
                name="brain",
                start=partial(BrainActor.start, ctx),
                shutdown_s=shutdown,
                start_timeout_s=120.0,
            ),
            control,
        ]
        if cfg.sync.enabled:
            from omega.actors.sync import SyncAgent

            # After the brain (it syncs the brain's state; a brain restart restarts it).
            children.insert(1, ChildSpec(name="sync", start=partial(SyncAgent.start, ctx),
                                         shutdown_s=shutdown))
        if cfg.node.listen:
            children.insert(1, health_api)
        strategy = "rest_for_one"
    elif isinstance(cfg, AggregatorConfig | HubConfig):
        from omega.actors.federation import AggregatorActor, HubActor, resource_handler

        hub = isinstance(cfg, HubConfig)
        owner = "hub" if hub else "aggregator"
        children = [
            ChildSpec(name=owner, start=partial(HubActor.start if hub else AggregatorActor.start,
                                                ctx),
                      shutdown_s=shutdown, start_timeout_s=60.0),
        ]
        if cfg.node.listen:
            # Batches of sealed reports come in frames of up to the protocol's limit.
            big = replace(cfg.transport,
                          recv_max_size=max(cfg.transport.recv_max_size, MAX_FRAME_BYTES + 1024))
            children.append(_rpc_server("api", cfg.node.listen, resource_handler(ctx, owner),
                                        big, shutdown))
        children.append(control)
        strategy = "rest_for_one"
    else:
        children = []
        if cfg.node.listen:
            children.append(health_api)
        children.append(control)
        strategy = "one_for_one"
    admin = getattr(cfg, "admin", None)
    if admin is not None and admin.enabled:
        from omega.actors.admin import AdminActor

        children.append(ChildSpec(name="admin", start=partial(AdminActor.start, ctx),
                                  shutdown_s=shutdown))
    return SupervisorSpec(
        name=cfg.role,
        strategy=strategy,
        max_restarts=sup.max_restarts,
        within_s=sup.within_s,
        children=tuple(children),
    )
