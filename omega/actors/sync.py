"""The TV's sync agent: a thin supervised actor running ``omega.sync.core.SyncCore``.

It sleeps on one timer between due times (the next sync or heartbeat, jittered,
with backoff after failures): no polling. Each wake-up is a ``_Tick`` message to
the actor, so the cycle runs on the actor's own thread and a crash in it reaches
the supervisor like any other. Everything the cycle must keep is in the brain's
LMDB, so a restart (or kill -9) resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import pykka

from omega.actors.base import OmegaActor

if TYPE_CHECKING:
    from omega.actors.context import NodeContext
    from omega.sync.core import SyncCore

log = logging.getLogger("omega.actors.sync")


class _Tick:
    """Time to run what is due."""


class SyncAgent(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._core: SyncCore | None = None
        self._timer: threading.Timer | None = None

    def on_start(self) -> None:
        from omega.config import TvConfig
        from omega.sync.core import SyncCore
        from omega.sync.link import DeviceLink, device_key_from_secret

        cfg = self._ctx.cfg
        assert isinstance(cfg, TvConfig)
        brain = self._ctx.resource("brain")
        if brain is None:
            raise RuntimeError("the sync agent needs the brain, which is not running")
        key = device_key_from_secret(self._ctx.secrets["device_key"], cfg.source)
        settings = cfg.sync

        def connect(group: Any) -> DeviceLink:
            return DeviceLink(group, settings.device_id, key, transport=cfg.transport)

        self._core = SyncCore(brain, settings, connect)
        self._ctx.publish("sync", self._core)
        log.info("sync agent started", extra={"fields": {
            "group": self._core.group.name if self._core.group else None,
            "interval_s": settings.interval, "tier": settings.tier}})
        self._arm(self._core.sleep_for())

    def _arm(self, seconds: float) -> None:
        ref = self.actor_ref

        def fire() -> None:
            with contextlib.suppress(pykka.ActorDeadError):  # stopped meanwhile
                ref.tell(_Tick())

        self._timer = threading.Timer(seconds, fire)
        self._timer.daemon = True
        self._timer.start()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            assert self._core is not None
            self._arm(self._core.tick())
            return None
        return super().on_receive(message)

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._core is not None:
            self._ctx.withdraw("sync", self._core)
            self._core.close()
            self._core = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()

    def sync_now(self) -> dict[str, Any]:
        """Run a sync at once (operators, tests); returns its outcome."""
        assert self._core is not None
        out = self._core.sync()
        return dict(out.__dict__)

    def status(self) -> dict[str, Any]:
        assert self._core is not None
        return self._core.status()
