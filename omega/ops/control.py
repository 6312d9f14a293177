"""The node's local control socket: operator commands, health and the TV's local API.

``ControlHandler.handle(frame) -> frame`` runs on the control server's worker
threads. It decodes with the protocol's hard limits, dispatches by message type,
and answers every failure with a typed ``ErrorReply`` — it never raises.

Commands (``CtlRequest.command``): ``tree``, ``kill <name>``, ``raft``,
``shard`` (sync service counters), ``federation status|trigger[=N]|rotate-key[=N]``,
``content <path>`` (hub: add a JSON-lines file of titles), ``health``, ``metrics``
(Prometheus text format: how a TV, which listens on no network address, shows its
metrics), ``stop``. TV messages
(``TvObserve``, ``TvRecommend``, ``TvImportCatalog``, ``TvStatus``) are asked
of the brain actor, which owns the brain and serialises access to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omega.config import HubConfig
from omega.errors import OmegaError, ProtocolError, StoreError
from omega.protocol import (
    CtlReply,
    CtlRequest,
    ErrorReply,
    Health,
    HealthReply,
    Message,
    TvImportCatalog,
    TvObserve,
    TvOk,
    TvRecommend,
    TvRecommendReply,
    TvStatus,
    Unavailable,
    decode,
    encode,
)
from omega.protocol.limits import REASON_MAX_LEN, TITLE_MAX_LEN

if TYPE_CHECKING:
    from omega.actors.context import NodeContext

log = logging.getLogger("omega.ops.control")

CONTROL_TYPES: tuple[type[Message], ...] = (
    CtlRequest,
    Health,
    TvObserve,
    TvRecommend,
    TvImportCatalog,
    TvStatus,
)
#: How long a control request may wait for the brain (a catalog import embeds text).
BRAIN_ASK_TIMEOUT_S = 600.0


def read_content_lines(path: str) -> list[Any]:
    """The items of a JSON-lines content file (``id``, ``title``, optional
    ``metadata`` and ``embedding``); a clear error names the line that is wrong."""
    import json
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read {path}: {exc.strerror}") from None
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{path}:{n}: not JSON: {exc.msg}") from None
    return items


def error_reply(exc: BaseException) -> bytes:
    """The wire answer to a failed request: typed code, no internals."""
    return encode(ErrorReply.from_error(exc))


def health_reply(ctx: NodeContext) -> HealthReply:
    # "starting" until the whole tree is up: the control socket answers before the
    # supervisor has handed over its handle, and TV commands need that handle.
    status = ("stopping" if ctx.stop_requested.is_set()
              else "starting" if ctx.handle is None else "ok")
    return HealthReply(
        role=ctx.cfg.role,
        name=ctx.cfg.node.name,
        status=status,
        uptime_s=round(ctx.uptime_s(), 3),
        version=ctx.version,
    )


def health_only_handler(ctx: NodeContext) -> Callable[[bytes], bytes]:
    """A network endpoint that answers health and nothing else (yet)."""

    def handle(frame: bytes) -> bytes:
        try:
            decode(frame, allowed=(Health,))
            return encode(health_reply(ctx))
        except ProtocolError as exc:
            return error_reply(exc)

    return handle


class ControlHandler:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def handle(self, frame: bytes) -> bytes:
        try:
            msg = decode(frame, allowed=CONTROL_TYPES)
            return encode(self.dispatch(msg))
        except OmegaError as exc:
            return error_reply(exc if isinstance(exc, ProtocolError) else as_protocol_error(exc))
        except Exception as exc:  # a bug: logged with its traceback, answered opaquely
            log.exception("control request failed")
            return error_reply(exc)

    def dispatch(self, msg: Message) -> Message:
        if isinstance(msg, Health):
            return health_reply(self.ctx)
        if isinstance(msg, CtlRequest):
            return CtlReply(ok=True, payload=self.command(msg.command, msg.target))
        return self.tv(msg)

    def command(self, command: str, target: str) -> Any:
        ctx = self.ctx
        handle = ctx.handle
        if command == "health":
            h = health_reply(ctx)
            return {
                "role": h.role,
                "name": h.name,
                "status": h.status,
                "uptime_s": h.uptime_s,
                "version": h.version,
            }
        if handle is None:
            raise Unavailable("node is still starting")
        if command == "tree":
            return handle.tree()
        if command == "kill":
            if not target:
                raise ProtocolError("kill needs an actor name (see `ctl tree`)")
            handle.kill(target)
            return {"killed": target}
        if command == "stop":
            ctx.stop_requested.set()
            return {"stopping": True}
        if command == "metrics":
            metrics = ctx.resource("metrics")
            if metrics is None or not metrics.enabled:
                raise Unavailable("metrics are off on this node")
            return metrics.exposition().decode()
        if command == "federation":
            return self.federation(target or "status")
        if command == "content":
            return self.content(target)
        if command in ("raft", "shard"):
            service = ctx.resource("shard")
            if service is None:
                raise Unavailable(f"no shard service on this node (role {ctx.cfg.role})")
            if command == "raft":
                return service.raft_status()
            stats = service.stats()
            sync = ctx.resource("sync_server")  # the device port's connection pressure
            if sync is not None:
                stats["device_port"] = sync.connection_stats()
            return stats
        raise ProtocolError(
            f"unknown command {command!r}; one of tree, kill, raft, shard, federation, "
            "content, health, metrics, stop"
        )

    def federation(self, action: str) -> Any:
        """``status``, ``trigger`` (every role), ``rotate-key`` (hub). On the hub,
        ``trigger=VERSION`` and ``rotate-key=KEY_ID`` are safe to ask again."""
        fed = self.ctx.resource("federation")
        if fed is None:
            raise Unavailable(f"no federation on this node (role {self.ctx.cfg.role}) yet")
        if action == "status":
            return fed.status()
        action, _, arg = action.partition("=")
        if action == "trigger" and not arg:
            return fed.trigger()
        if action == "trigger" and isinstance(self.ctx.cfg, HubConfig):
            return fed.trigger(_whole(arg, "trigger", "release version"))
        if action == "trigger":
            raise ProtocolError(f"trigger={arg}: a release version is for the hub only; "
                                f"this is a {self.ctx.cfg.role}")
        if action == "rotate-key" and hasattr(fed, "rotate_key"):
            return fed.rotate_key(_whole(arg, "rotate-key", "key id") if arg else None)
        raise ProtocolError(f"unknown federation action {action!r}; one of status, trigger"
                            + (", rotate-key" if hasattr(fed, "rotate_key") else ""))

    def content(self, path: str) -> Any:
        """Add the titles of a JSON-lines file (on this machine) to the hub's registry."""
        fed = self.ctx.resource("federation")
        if fed is None or not hasattr(fed, "add_content"):
            raise ProtocolError(f"content goes to a hub, this is a {self.ctx.cfg.role}")
        if not path:
            raise ProtocolError("content needs the path of a JSON-lines file")
        return fed.add_content(read_content_lines(path))

    def tv(self, msg: Message) -> Message:
        brain_ref = self._brain()
        proxy = brain_ref.proxy()
        if isinstance(msg, TvObserve):
            return TvOk(
                payload=proxy.observe(msg.content_id, msg.watch_fraction, msg.timestamp).get(
                    timeout=BRAIN_ASK_TIMEOUT_S
                )
            )
        if isinstance(msg, TvRecommend):
            recs = proxy.recommend(msg.k, msg.timestamp).get(timeout=BRAIN_ASK_TIMEOUT_S)
            return TvRecommendReply(
                items=tuple(
                    (r.content_id, float(r.score), r.reason[:REASON_MAX_LEN]) for r in recs
                ),
                titles=tuple(r.title[:TITLE_MAX_LEN] for r in recs),
            )
        if isinstance(msg, TvImportCatalog):
            return TvOk(payload=proxy.import_catalog(msg.items).get(timeout=BRAIN_ASK_TIMEOUT_S))
        if isinstance(msg, TvStatus):
            payload = dict(proxy.status().get(timeout=BRAIN_ASK_TIMEOUT_S))
            # The sync agent's state lives in the brain's LMDB: read it here rather than
            # wait behind a sync that may be waiting for the network.
            sync = self.ctx.resource("sync")
            payload["sync"] = sync.status() if sync is not None else {"enabled": False}
            return TvOk(payload=payload)
        raise ProtocolError(f"unexpected message {type(msg).__name__}")

    def _brain(self) -> Any:
        if self.ctx.cfg.role != "tv":
            raise ProtocolError(f"TV commands go to a TV node, this is a {self.ctx.cfg.role}")
        if self.ctx.handle is None:
            raise Unavailable("node is still starting")
        try:
            return self.ctx.handle.ref("brain")
        except OmegaError as exc:
            raise Unavailable(f"brain not running: {exc}") from None


def _whole(text: str, action: str, what: str) -> int:
    """The ``N`` of ``trigger=N`` or ``rotate-key=N``."""
    if not text.isdigit() or not 0 < int(text) < 2**32:
        raise ProtocolError(f"{action}={text}: the {what} must be a whole number from 1 "
                            "to 4294967295 (see `ctl federation status`)")
    return int(text)


def as_protocol_error(exc: OmegaError) -> ProtocolError:
    """A failure from below the protocol as a typed code: a replicated store's says
    whether the command may have been applied (``omega.raft.wire_error``)."""
    if not isinstance(exc, StoreError):
        return ProtocolError(str(exc), code="bad_request")
    from omega.raft import wire_error

    return wire_error(exc)
