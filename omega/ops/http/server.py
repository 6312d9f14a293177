"""``AdminServer``: uvicorn serving the admin app on its own thread, plus a poller.

The socket is bound in ``start()`` (a port in use fails the start, in the caller's
thread, with the address in the message); uvicorn then serves it on a thread with
its own event loop. A second thread samples the node's counters and polls the
watched shards every ``[admin] poll_s``. ``close()`` stops both within a deadline.
``on_fatal`` is called if the serving thread ends while it should not (the admin
actor crashes then, and its supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from omega.errors import TransportError
from omega.ops.http.app import Admin, build_app
from omega.ops.http.settings import split_host_port

log = logging.getLogger("omega.ops.http")

START_TIMEOUT_S = 10.0


def bind(listen: str) -> socket.socket:
    host, port = split_host_port(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TransportError(f"admin API cannot listen on {listen}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class AdminServer:
    def __init__(self, admin: Admin, listen: str,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.admin = admin
        self.listen = listen
        self._on_fatal = on_fatal
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self.address = ""

    def start(self) -> AdminServer:
        self._sock = bind(self.listen)
        host, port = self._sock.getsockname()[:2]
        self.address = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        config = uvicorn.Config(build_app(self.admin), log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1,
                                limit_concurrency=256, timeout_keep_alive=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="omega-admin-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise TransportError(f"admin API on {self.listen} did not start")
            self._stop.wait(0.01)
        self._poller = threading.Thread(target=self._poll, name="omega-admin-poll", daemon=True)
        self._poller.start()
        log.info("admin API listening", extra={"fields": {
            "address": self.address, "roles": self.admin.tokens.roles(),
            "watched_shards": len(self.admin.watcher.urls) if self.admin.watcher else 0}})
        if not self.admin.tokens.by_role:
            log.warning("admin API has no token configured: only /api/v1/health, /metrics "
                        "and the dashboard page answer (set OMEGA_READ_TOKEN, ...)")
        return self

    def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:
            if not self._stop.is_set() and self._on_fatal is not None:
                self._on_fatal(exc)
            return
        if not self._stop.is_set() and self._on_fatal is not None:
            self._on_fatal(TransportError("admin API server stopped on its own"))

    def _poll(self) -> None:
        interval = self.admin.view.settings.poll_s
        while not self._stop.is_set():
            try:
                self.admin.view.sample()
                if self.admin.watcher is not None:
                    self.admin.watcher.poll()
            except Exception:  # a failed poll is retried next time; never fatal
                log.exception("admin poll failed")
            self._stop.wait(interval)

    def close(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._poller is not None:
            self._poller.join(timeout_s)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
