"""Transport settings: the ``[transport]`` table of every role's config.

Loaded by ``omega.schema.load``; ranges are checked here so that a bad value is a
``SettingError`` naming the key before any socket is opened. A leaf module (it
imports no pynng) so that loading a config does not load the transport engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omega.schema import require


@dataclass(frozen=True)
class TlsSettings:
    """TLS for ``tls+tcp://`` addresses (``[transport.tls]``); unused otherwise.

    A server needs ``cert_file`` and ``key_file``; with ``ca_file`` it also
    requires client certificates signed by that CA (mutual TLS). A client needs
    ``ca_file`` (the server's certificate is always verified); ``cert_file`` and
    ``key_file`` make it present a client certificate.
    """

    #: PEM certificate (chain) this side presents.
    cert_file: Path | None = None
    #: PEM private key of ``cert_file`` (unencrypted).
    key_file: Path | None = None
    #: PEM CA bundle that verifies the peer.
    ca_file: Path | None = None
    #: Name the client expects in the server certificate; empty: the host of the address.
    server_name: str = ""

    def __post_init__(self) -> None:
        require((self.cert_file is None) == (self.key_file is None), "cert_file",
                "cert_file and key_file must be given together")
        require(len(self.server_name) <= 253, "server_name", "must be at most 253 characters")


@dataclass(frozen=True)
class TransportSettings:
    """Request/reply over nng: worker pool, size limit, timeouts, retries, reconnects."""

    #: Server: threads receiving and handling requests, each on its own context.
    workers: int = 8
    #: Server: replies a handler deferred (returned a ``Pending``) that may be
    #: outstanding at once; at the limit the workers stop receiving until one is sent.
    max_pending: int = 4096
    #: Largest frame a socket accepts, in bytes. nng drops a bigger frame and closes
    #: that connection. Our largest message is a PullResp (≤ 5 KB typical).
    recv_max_size: int = 64 * 1024
    #: Client: deadline of one attempt (connect wait + send + reply).
    request_timeout_s: float = 5.0
    #: Client: further attempts after a failed one (timeouts, resets, refusals).
    retries: int = 2
    #: Client: backoff before the first retry; doubles per retry, with jitter.
    retry_backoff_s: float = 0.05
    #: Client: backoff ceiling.
    retry_backoff_max_s: float = 1.0
    #: Client: how long a request may wait for a connection to its endpoint before the
    #: attempt fails over to the next one. Server: bound on sending one reply.
    send_timeout_s: float = 1.0
    #: Dialer reconnect backoff (nng doubles from min to max).
    reconnect_min_ms: int = 50
    reconnect_max_ms: int = 2_000
    #: ``close()`` waits this long for workers / in-flight requests to finish.
    close_timeout_s: float = 5.0
    #: Server: connections one source IP address may hold (0: no limit). Many TVs
    #: behind one carrier NAT share an address: raise it for such a fleet.
    max_conns_per_address: int = 256
    #: Server: connections open at once (0: the process's descriptor limit minus
    #: ``fd_headroom``, read at start).
    max_conns: int = 0
    #: Descriptors kept free for everything else (Raft, LMDB, control, logs), at
    #: most a quarter of the limit.
    fd_headroom: int = 1024
    #: Server: close a connection that carried no request for this long (0: never).
    #: A real client's dialer reconnects by itself when it next sends.
    idle_timeout_s: float = 300.0
    tls: TlsSettings = field(default_factory=TlsSettings)

    def __post_init__(self) -> None:
        require(1 <= self.workers <= 256, "workers", "must be between 1 and 256")
        require(1 <= self.max_pending <= 1_000_000, "max_pending",
                "must be between 1 and 1000000")
        require(1024 <= self.recv_max_size <= 64 * 1024 * 1024, "recv_max_size",
                "must be between 1 KiB and 64 MiB (0, nng's 'unlimited', is not allowed)")
        require(0.001 <= self.request_timeout_s <= 600, "request_timeout_s",
                "must be between 0.001 and 600 s")
        require(0 <= self.retries <= 10, "retries", "must be between 0 and 10")
        require(0 <= self.retry_backoff_s <= 60, "retry_backoff_s", "must be between 0 and 60 s")
        require(self.retry_backoff_s <= self.retry_backoff_max_s <= 300, "retry_backoff_max_s",
                "must be at least retry_backoff_s and at most 300 s")
        require(0.001 <= self.send_timeout_s <= 600, "send_timeout_s",
                "must be between 0.001 and 600 s")
        require(1 <= self.reconnect_min_ms <= 60_000, "reconnect_min_ms",
                "must be between 1 and 60000 ms")
        require(self.reconnect_min_ms <= self.reconnect_max_ms <= 600_000, "reconnect_max_ms",
                "must be at least reconnect_min_ms and at most 600000 ms")
        require(0.01 <= self.close_timeout_s <= 600, "close_timeout_s",
                "must be between 0.01 and 600 s")
        require(0 <= self.max_conns_per_address <= 1_000_000, "max_conns_per_address",
                "must be between 0 (no limit) and 1000000")
        require(0 <= self.max_conns <= 10_000_000, "max_conns",
                "must be between 0 (from the descriptor limit) and 10000000")
        require(16 <= self.fd_headroom <= 1_000_000, "fd_headroom",
                "must be between 16 and 1000000")
        require(self.idle_timeout_s == 0 or 0.1 <= self.idle_timeout_s <= 86_400,
                "idle_timeout_s", "must be 0 (never) or between 0.1 and 86400 s")
