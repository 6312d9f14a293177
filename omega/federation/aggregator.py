"""``AggregatorService``: the regional shuffler's request handling and its rounds.

``handle(frame)`` answers ``ShardBatch`` parts (stored durably in the
``ShuffleStore`` before the ``BatchAck`` goes back) and ``Health``. ``round()`` —
on the interval, or on demand (``trigger``) — mixes the held parts when enough
came (``min_batches``) or the oldest waited ``max_wait_s``, then sends every
pending mix part to the hub as ``RegionBatch`` and forgets it once acknowledged.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from omega import __version__
from omega.errors import OmegaError, ProtocolError
from omega.federation.batches import UnexpectedReply
from omega.federation.settings import AggregatorSettings
from omega.federation.shuffle import ShuffleFull, ShuffleStore
from omega.protocol import (
    BadRequest,
    BatchAck,
    ErrorReply,
    Health,
    HealthReply,
    RegionBatch,
    ShardBatch,
    Unavailable,
    decode,
    encode,
)

log = logging.getLogger("omega.federation.aggregator")

#: ``send(RegionBatch) -> BatchAck`` (raises on any failure).
SendRegion = Callable[[RegionBatch], BatchAck]


class AggregatorService:
    """One aggregator. Thread-safe."""

    def __init__(self, settings: AggregatorSettings, store: ShuffleStore,
                 send: SendRegion | None, *, wall: Callable[[], float] = time.time,
                 name: str = "aggregator") -> None:
        self.settings = settings
        self._store = store
        self._send = send
        self._wall = wall
        self._name = name
        self._started = time.monotonic()
        self._round_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self.last_round: dict[str, Any] = {}

    def handle(self, frame: bytes) -> bytes:
        """One request → its reply frame; never raises for bad input."""
        try:
            msg = decode(frame, allowed=(ShardBatch, Health))
            if isinstance(msg, ShardBatch):
                try:
                    fresh = self._store.receive(msg.batch_id, msg.part, msg.reports,
                                                int(self._wall() * 1000))
                except ShuffleFull as exc:
                    raise Unavailable(str(exc), retry_after_s=5.0) from None
                self._count("batch.stored" if fresh else "batch.duplicate")
                reply: Any = BatchAck(msg.batch_id, msg.part, not fresh)
            else:
                reply = HealthReply("aggregator", self._name, "ok",
                                    max(0.0, time.monotonic() - self._started), __version__)
        except ProtocolError as exc:
            self._count(f"error.{exc.code}")
            return encode(ErrorReply.from_error(exc))
        except Exception as exc:
            log.exception("aggregator request failed")
            return encode(ErrorReply.from_error(exc))
        return encode(reply)

    def round(self, force: bool = False) -> dict[str, Any]:
        """Mix if due (or ``force``), then forward every pending part to the hub."""
        with self._round_lock:
            s = self.settings
            now = self._wall()
            mixed = None
            if force or self._store.due(int(now * 1000), s.min_batches, s.max_wait_s):
                mixed = self._store.mix()
            sent = failed = 0
            error = ""
            if self._send is not None:
                for part in self._store.pending():
                    reports = list(part.reports)
                    secrets.SystemRandom().shuffle(reports)
                    try:
                        ack = self._send(RegionBatch(s.region, part.batch_id, tuple(reports),
                                                     part.part, part.parts))
                        if (ack.batch_id, ack.part) != (part.batch_id, part.part):
                            raise UnexpectedReply("ack for another part")
                    except (OmegaError, OSError) as exc:
                        failed += 1
                        error = f"{type(exc).__name__}: {exc}"
                        break  # the hub is away: the rest waits for the next round
                    self._store.acked(part.batch_id, part.part)
                    sent += 1
            pruned = self._store.prune(int(now * 1000))
            self.last_round = {"time": now, "mixed": mixed, "parts_sent": sent,
                               "failed": failed, "error": error, "pruned": pruned}
            self._count("round")
            if error:
                log.warning("forwarding to the hub failed", extra={"fields": self.last_round})
            return dict(self.last_round)

    # -- the ops hook ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._counts_lock:
            counts = dict(self._counts)
        return {"role": "aggregator", "region": self.settings.region, **self._store.stats(),
                "last_round": self.last_round, "requests": counts}

    def trigger(self) -> dict[str, Any]:
        return self.round(force=True)

    def add_content(self, items: Any) -> dict[str, Any]:
        """Titles are registered at the hub, not here (the admin API's uniform hook)."""
        raise BadRequest("content is added at the hub: `omega-node ctl ... content add FILE` "
                         "against a hub node")

    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n
