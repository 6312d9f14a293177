"""``NodeContext``: what a role's actors share at run time.

It lives below the actors so that they import it from here and nothing imports the
composition root (``omega.node``), which builds it once and owns the process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omega import __version__

if TYPE_CHECKING:
    from omega.config import NodeConfig

__all__ = ["NodeContext"]


@dataclass
class NodeContext:
    """What the role's actors share at run time. Built once by ``omega.node.run_node``.

    ``resources`` holds the objects that owner actors publish when they start (the
    store, the shard service, the brain) so that the thin server actors can reach
    them; it is replaced entry by entry, under ``lock``, when an owner restarts.
    """

    cfg: NodeConfig
    secrets: dict[str, bytes] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    handle: Any = None
    resources: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    version: str = __version__

    def publish(self, name: str, obj: Any) -> None:
        with self.lock:
            self.resources[name] = obj

    def withdraw(self, name: str, obj: Any) -> None:
        with self.lock:
            if self.resources.get(name) is obj:
                del self.resources[name]

    def resource(self, name: str) -> Any:
        with self.lock:
            return self.resources.get(name)

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at
