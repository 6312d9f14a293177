"""A shard replica in process, for simulations and benchmarks of what TVs send.

The real ``ShardService`` and shard state machine (``omega.shard.state.apply``) over
an in-memory key-value store that commits each command at once (one replica, no
Raft: what is measured here is what a TV sends and what the shard stores, not
replication). ``RecordingRequester`` keeps every frame a device sent and every
reply, with its simulated time, so a test or an adversary can read them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from omega.errors import StoreError
from omega.raft import KvReader, MemoryKv, RaftSettings
from omega.shard import ShardService, ShardSettings, state
from omega.transport import Pending, reply_bytes

__all__ = ["Frame", "MemoryShardStore", "RecordingRequester", "SimClock", "in_process_shard"]


class SimClock:
    """A settable clock (seconds): wall time and monotonic time of a simulation."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class MemoryShardStore:
    """The ``ShardStore`` port over ``MemoryKv``: a single leader that commits at once."""

    def __init__(self) -> None:
        self.kv = MemoryKv(state.DATABASES)
        self._lock = threading.RLock()
        self._index = 0
        self._hooks: list[Callable[[], None]] = []

    def submit(self, command: bytes, timeout_s: float) -> Any:
        with self._lock:
            self._index += 1
            return state.apply(self.kv, command, self._index)

    def submit_async(self, command: bytes, timeout_s: float,
                     on_done: Callable[[Any, StoreError | None], None]) -> None:
        try:
            result = self.submit(command, timeout_s)
        except StoreError as exc:
            on_done(None, exc)
        else:
            on_done(result, None)

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def remove_tick_hook(self, hook: Callable[[], None]) -> None:
        self._hooks = [h for h in self._hooks if h != hook]

    def wake(self) -> None:
        for hook in list(self._hooks):
            hook()

    @contextlib.contextmanager
    def read(self) -> Iterator[KvReader]:
        with self._lock:
            yield self.kv

    def is_leader(self) -> bool:
        return True

    def leader(self) -> str | None:
        return "127.0.0.1:1"

    def status(self) -> dict[str, Any]:
        return {"role": "leader", "leader": self.leader(), "commit_index": self._index,
                "applied_index": self._index}

    def state_hash(self) -> str:
        with self._lock:
            return self.kv.state_hash()


@dataclass(frozen=True)
class Frame:
    """One request a device sent and the reply it got."""

    t: float
    sent: bytes
    reply: bytes


@dataclass
class RecordingRequester:
    """A ``Requester`` calling the service in process and recording every frame."""

    service: ShardService
    clock: Callable[[], float]
    frames: list[Frame] = field(default_factory=list)

    def request(self, data: bytes, timeout_s: float | None = None) -> bytes:
        try:
            out = self.service.handle(bytes(data))
            reply = reply_bytes(out, timeout_s or 5.0) if isinstance(out, Pending) else out
        except Exception as exc:  # the service's own error path, as the transport does
            reply = self.service.on_error(exc)
        self.frames.append(Frame(self.clock(), bytes(data), reply))
        return reply

    def close(self) -> None:
        pass


def in_process_shard(fleet_key: bytes, dedup_secret: bytes, wall: Callable[[], float], *,
                     k_anonymity: int = 50, **settings: Any) -> ShardService:
    """A started shard service over ``MemoryShardStore`` (rate limit off unless given)."""
    opts: dict[str, Any] = {"rate_limit_interval_s": 0.0, "pull_interval_s": 0.0,
                            "k_anonymity": k_anonymity, "timestamp_window_s": 600.0}
    opts.update(settings)
    cfg = ShardSettings(raft=RaftSettings(self_address="127.0.0.1:1", partners=()),
                        advertise="tcp://127.0.0.1:2", **opts)
    return ShardService(cfg, MemoryShardStore(), fleet_key, dedup_secret, wall_clock=wall,
                        clock=wall).start()
