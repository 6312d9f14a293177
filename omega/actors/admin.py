"""The admin actor: owns the admin API's HTTP server (uvicorn) and its poller.

Thin: ``omega.ops.http`` holds the app, the auth and the views. The server is
started in ``on_start`` (a port in use fails the start) and closed in
``on_stop``; if uvicorn's thread ends on its own, the actor crashes so that its
supervisor restarts it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from omega.actors.base import OmegaActor
from omega.errors import TransportError

if TYPE_CHECKING:
    from omega.actors.context import NodeContext
    from omega.ops.http.server import AdminServer

log = logging.getLogger("omega.actors.admin")


class AdminActor(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._server: AdminServer | None = None

    def on_start(self) -> None:
        from omega.ops.http.server import AdminServer
        from omega.ops.http.wiring import admin_for, admin_settings

        self._server = AdminServer(admin_for(self._ctx), admin_settings(self._ctx).listen,
                                   on_fatal=self._died).start()
        self._ctx.publish("admin", self._server)

    def on_stop(self) -> None:
        if self._server is not None:
            self._ctx.withdraw("admin", self._server)
            self._server.close()
            self._server = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()

    def _died(self, exc: BaseException) -> None:
        self.inject_crash(TransportError(f"admin API server ended: {exc!r}"))
