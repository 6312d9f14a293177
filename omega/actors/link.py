"""The link between one incarnation of a child and its supervisor.

A child reports three things through its ``Link``: it started (``on_start``
finished), an ask handler raised, and it exited (with an ``Exit`` reason) — the
last from the very end of its thread, so a restart never overlaps the old
incarnation's cleanup. The supervisor waits on the link (start, orderly stop) and
gets each exit as an event on its queue: no polling.

A worker finds its link without any argument: the supervisor binds the link to
its own thread while it calls ``ChildSpec.start()``, and ``OmegaActor.__init__``
(which pykka runs in the caller's thread) claims it. So an actor can never fail
before its supervisor is watching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Crashable", "Exit", "ExitKind", "Link", "binding", "claim"]

ExitKind = Literal["normal", "crash", "killed"]


@dataclass(frozen=True)
class Exit:
    """Why an incarnation ended. ``normal`` is an orderly stop; anything else is abnormal."""

    kind: ExitKind
    error: BaseException | None = None

    @property
    def abnormal(self) -> bool:
        return self.kind != "normal"

    def describe(self) -> str:
        if self.error is None:
            return self.kind
        return f"{self.kind}: {type(self.error).__name__}: {self.error}"


class Crashable(Protocol):
    """What a link can do to its child from another thread: make it fail."""

    def inject_crash(self, error: Exception) -> None: ...


class Link:
    """One incarnation of one child, seen from both sides. Thread-safe."""

    def __init__(
        self,
        path: str,
        on_exit: Callable[[Link, Exit], None],
        on_ask_failure: Callable[[BaseException, bool], None],
    ) -> None:
        self.path = path
        self.target: Crashable | None = None
        self.urn: str | None = None
        self._on_exit = on_exit
        self._on_ask_failure = on_ask_failure
        self._cond = threading.Condition()
        self._started = False
        self._exit: Exit | None = None

    def attach(self, target: Crashable, urn: str | None = None) -> None:
        self.target = target
        self.urn = urn

    @property
    def was_started(self) -> bool:
        with self._cond:
            return self._started

    @property
    def exit(self) -> Exit | None:
        with self._cond:
            return self._exit

    # --- reported by the child -------------------------------------------------

    def started(self) -> None:
        with self._cond:
            self._started = True
            self._cond.notify_all()

    def ask_failed(self, error: BaseException, expected: bool) -> None:
        self._on_ask_failure(error, expected)

    def exited(self, exit: Exit) -> None:
        with self._cond:
            if self._exit is not None:
                return
            self._exit = exit
            self._cond.notify_all()
        # After waking waiters, so a callback that waits on this link cannot deadlock.
        self._on_exit(self, exit)

    # --- waited on by the supervisor ------------------------------------------

    def wait_started(self, timeout: float | None) -> Literal["started", "exited", "timeout"]:
        with self._cond:
            self._cond.wait_for(lambda: self._started or self._exit is not None, timeout)
            if self._started:
                return "started"
            return "exited" if self._exit is not None else "timeout"

    def wait_exited(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._exit is not None, timeout)


_binding = threading.local()


@contextmanager
def binding(link: Link) -> Iterator[None]:
    """Offer ``link`` to the first ``OmegaActor`` constructed in this thread."""
    previous = getattr(_binding, "link", None)
    _binding.link = link
    try:
        yield
    finally:
        _binding.link = previous


def claim() -> Link | None:
    """The link offered to this thread, if no actor has attached to it yet."""
    link: Link | None = getattr(_binding, "link", None)
    if link is None or link.target is not None:
        return None
    return link
