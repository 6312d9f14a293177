"""Request/reply and broadcast over nng: bytes in, bytes out.

The only package that imports pynng. ``RpcServer`` serves a handler on a Rep0
socket with a pool of (context, thread) workers (a handler may answer later, with
a ``Pending``); ``RpcClient`` sends requests
with timeouts, bounded retries and endpoint failover; ``Publisher``/``Subscriber``
broadcast. Errors are ``omega.errors.TransportError`` subclasses.
"""

from omega.reply import Handler, OnError, Pending, Reply, reply_bytes
from omega.transport.client import RpcClient
from omega.transport.errors import AddressInUse, RequestTimeout, TransportClosed, TransportError
from omega.transport.memory import InMemoryRequester, Requester
from omega.transport.pubsub import Publisher, Subscriber
from omega.transport.server import OnFatal, RpcServer
from omega.transport_settings import TlsSettings, TransportSettings

__all__ = [
    "AddressInUse",
    "Handler",
    "InMemoryRequester",
    "OnError",
    "OnFatal",
    "Pending",
    "Publisher",
    "Reply",
    "RequestTimeout",
    "Requester",
    "RpcClient",
    "RpcServer",
    "Subscriber",
    "TlsSettings",
    "TransportClosed",
    "TransportError",
    "TransportSettings",
    "reply_bytes",
]
