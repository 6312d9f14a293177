"""The server actor: owns one ``RpcServer`` (a Rep0 socket with a pool of contexts).

The actor is thin on purpose: requests are served on the server's own blocking
context threads (the fast path measured in docs/transport.md), not through the
actor's inbox; a handler that answers later returns a ``Pending`` (the shard's
pushes), so a request waiting for something else holds no thread. The actor's job
is the socket's lifecycle under supervision: it binds in ``on_start``, closes in
``on_stop``, and crashes — so its supervisor restarts it — when a worker thread dies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from omega.actors.base import OmegaActor
from omega.errors import TransportError
from omega.transport import Handler, RpcServer, TransportSettings

log = logging.getLogger("omega.actors.rpc")


class RpcServerActor(OmegaActor):
    def __init__(
        self,
        name: str,
        listen: str,
        handler: Handler,
        on_error: Callable[[BaseException], bytes],
        settings: TransportSettings,
        on_bound: Callable[[str], None] | None = None,
        on_server: Callable[[RpcServer | None], None] | None = None,
    ) -> None:
        super().__init__()
        self._name = name
        self._listen = listen
        self._handler = handler
        self._on_error = on_error
        self._settings = settings
        self._on_bound = on_bound
        self._on_server = on_server
        self._server: RpcServer | None = None

    def on_start(self) -> None:
        self._server = RpcServer(
            self._listen,
            self._handler,
            self._settings,
            self._on_error,
            self._worker_died,
            name=self._name,
        ).start()
        log.info(
            "listening", extra={"fields": {"server": self._name, "address": self._server.address}}
        )
        if self._on_bound is not None:
            self._on_bound(self._server.address)
        if self._on_server is not None:
            self._on_server(self._server)

    def on_stop(self) -> None:
        if self._on_server is not None:
            self._on_server(None)
        if self._server is not None:
            self._server.close()
            self._server = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()

    def _worker_died(self, exc: BaseException) -> None:
        # Called from the dying worker thread: crash the actor so the supervisor
        # rebuilds the whole server rather than serve with fewer workers.
        self.inject_crash(TransportError(f"{self._name}: a server worker died: {exc!r}"))

    def stats(self) -> dict[str, int]:
        return self._server.stats() if self._server is not None else {}
