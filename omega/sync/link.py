"""``DeviceLink``: the cycle's ``ShardLink`` over ``DeviceClient`` (one shard group).

Signs with the device key (provisioned from the TV's secret, never the fleet
key), follows ``not_leader``, retries transient failures within the client's
deadline. An unreadable pull answer becomes a typed ``MalformedPull`` (or
``PullTooLarge``), so the cycle can say what it refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from omega.client import BadRequest, ClientSettings, DeviceClient
from omega.protocol import HeartbeatAck, PullResp, PushAck, TooLarge
from omega.sync.errors import MalformedPull, PullTooLarge
from omega.sync.settings import ShardGroup
from omega.transport import Requester, TransportSettings

__all__ = ["DeviceLink"]


class DeviceLink:
    def __init__(self, group: ShardGroup, device_id: str, device_key: bytes,
                 client: ClientSettings | None = None,
                 transport: TransportSettings | None = None, *,
                 requester: Requester | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.group = group
        # A catch-up pulls many times in a row: wait out the shard's read limit (about
        # a pull a second after a burst) rather than give up the sync.
        client = client or ClientSettings(wait_rate_limit_max_s=2.0)
        self._client = DeviceClient(group.endpoints, device_id, device_key, client,
                                    transport=transport, requester=requester, wall=wall)

    def push(self, seq: int, reports: Sequence[bytes]) -> PushAck:
        return self._client.push_seq(seq, reports)

    def pull(self, since_version: int, region: str) -> PullResp:
        try:
            return self._client.pull(since_version, region)
        except BadRequest as exc:
            if exc.__cause__ is None:
                raise  # the shard refused our pull: not a broken answer
            if isinstance(exc.__cause__, TooLarge):
                raise PullTooLarge(f"pull refused: {exc}") from exc
            raise MalformedPull(f"pull refused: {exc}") from exc

    def heartbeat(self) -> HeartbeatAck:
        return self._client.heartbeat()

    def close(self) -> None:
        self._client.close()


def device_key_from_secret(secret: bytes, source: str = "<config>") -> bytes:
    """The device key from its secret: 64 hex digits, as ``omega-node tv provision`` writes."""
    from omega.errors import ConfigError

    try:
        key = bytes.fromhex(secret.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(source, "secrets.device_key",
                          "the device key must be 64 hex digits (32 bytes): provision the TV "
                          "with `omega-node tv provision`")
    return key
