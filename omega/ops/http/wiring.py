"""Build the admin API's parts from a running node's context (the admin actor calls it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omega.ops.http.app import Admin
from omega.ops.http.auth import Tokens
from omega.ops.http.settings import AdminSettings
from omega.ops.http.views import NodeView
from omega.ops.http.watch import ShardWatcher
from omega.ops.metrics import RESOURCE as METRICS
from omega.ops.metrics import NodeMetrics

if TYPE_CHECKING:
    from omega.actors.context import NodeContext


def admin_settings(ctx: NodeContext) -> AdminSettings:
    settings = getattr(ctx.cfg, "admin", None)
    return settings if isinstance(settings, AdminSettings) else AdminSettings()


def admin_for(ctx: NodeContext) -> Admin:
    """Views, tokens, watched shards and the node's metrics, tied together."""
    settings = admin_settings(ctx)
    view = NodeView(ctx, settings)
    tokens = Tokens.from_secrets(ctx.secrets, ctx.cfg.source)
    watcher = (ShardWatcher(settings.shards, ctx.secrets.get("read_token"))
               if settings.shards else None)
    metrics = ctx.resource(METRICS)
    if isinstance(metrics, NodeMetrics):
        metrics.view = view
        metrics.watcher = watcher
        if metrics.sync_latency is not None:
            view.latency_totals = metrics.latency_totals
    else:
        metrics = None
    return Admin(view=view, tokens=tokens, metrics=metrics, watcher=watcher)
