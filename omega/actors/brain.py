"""The TV's brain actor: owns the ``Brain`` (ONNX session, index, LMDB env).

Thin by design: every method converts wire records to the public API's types and
calls ``omega.brain.api.Brain``. The brain is opened in ``on_start`` (durable state
is reloaded from LMDB there) and closed in ``on_stop``/``on_failure``, so a
restart by the supervisor reopens it cleanly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omega.actors.base import OmegaActor

if TYPE_CHECKING:
    from omega.actors.context import NodeContext
    from omega.brain.api import Brain, Recommendation
    from omega.protocol import CatalogEntry

log = logging.getLogger("omega.actors.brain")


class BrainActor(OmegaActor):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._brain: Brain | None = None

    def on_start(self) -> None:
        from omega.brain.api import Brain
        from omega.config import TvConfig

        cfg = self._ctx.cfg
        assert isinstance(cfg, TvConfig)
        self._brain = Brain.open(cfg.node.data_dir / "brain", cfg.brain)
        self._ctx.publish("brain", self._brain)
        log.info("brain open", extra={"fields": self._brain.status()})

    def on_stop(self) -> None:
        if self._brain is not None:
            self._ctx.withdraw("brain", self._brain)
            self._brain.close()
            self._brain = None

    def on_failure(self, *_: object) -> None:
        self.on_stop()

    @property
    def brain(self) -> Brain:
        assert self._brain is not None
        return self._brain

    def observe(self, content_id: str, watch_fraction: float, timestamp: float) -> dict[str, Any]:
        from omega.brain.api import ViewingEvent

        seq = self.brain.observe(
            ViewingEvent(content_id=content_id, watch_fraction=watch_fraction, timestamp=timestamp)
        )
        return {"observed": content_id, "seq": seq}

    def recommend(self, k: int, timestamp: float | None) -> list[Recommendation]:
        t0 = time.perf_counter()
        recs = self.brain.recommend(k=k, timestamp=timestamp or time.time())
        metrics = self._ctx.resource("metrics")
        if metrics is not None:
            metrics.observe_recommend(time.perf_counter() - t0, len(recs))
        return recs

    def import_catalog(self, items: Sequence[CatalogEntry]) -> dict[str, Any]:
        from omega.brain.api import Content

        contents = [
            Content(
                id=e.id,
                title=e.title,
                genres=tuple(e.genres),
                description=e.description,
                year=e.year or None,
                duration_min=e.duration_min or None,
            )
            for e in items
        ]
        update = self.brain.add_content(contents)
        return {"added": update.added, "updated": update.updated, "unchanged": update.unchanged}

    def status(self) -> dict[str, Any]:
        return self.brain.status()
