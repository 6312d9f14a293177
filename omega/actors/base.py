"""``OmegaActor``: the base class of every Omega actor.

Pykka's failure rules (pykka 4.5 ``_actor.py``), which this class builds on:

- ``on_start`` raises: the failure is logged, the actor stops; neither
  ``on_failure`` nor ``on_stop`` runs.
- a ``tell`` handler raises: logged, ``on_failure`` runs, the actor stops.
- an ``ask`` handler raises: the exception goes to the caller's future and the
  actor keeps running — nobody else hears of it.
- ``on_stop``/``on_failure`` raise: logged, the actor stops.
- a ``BaseException`` in a handler stops *every* actor (``ActorRegistry.stop_all``).

Pykka has no public hook that sees all of these, so this class overrides five of
its internal methods (checked at import, below) to make every case visible to
the supervisor through the actor's ``Link``:

- the end of the thread reports ``Exit`` — ``normal`` if the actor stopped in
  order, ``crash``/``killed`` if any failure path ran;
- the end of ``on_start`` reports "started" (supervisors start children in order
  and wait for it);
- an ask handler's exception still goes to the caller, typed as raised, and is
  counted (``ask_failures``); if it is not one of ``expected_errors``
  (``OmegaError`` by default: a deliberate refusal), the actor's state is
  suspect, so it crashes before its next message and is restarted.

``inject_crash`` (used by chaos ``kill``) makes the actor fail before handling its
next message, exactly as if that message's handler had raised.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from types import TracebackType
from typing import Any, ClassVar

import pykka
from pykka._envelope import Envelope

from omega.actors import link as _link
from omega.actors.errors import ActorKilled, AskHandlerError
from omega.errors import OmegaError

__all__ = ["OmegaActor"]

_PYKKA_HOOKS = (
    "_actor_loop",
    "_actor_loop_setup",
    "_create_actor_inbox",
    "_handle_failure",
    "_handle_receive",
)
_missing = [name for name in _PYKKA_HOOKS if not hasattr(pykka.ThreadingActor, name)]
if _missing:  # pragma: no cover - only on an incompatible pykka
    raise ImportError(f"omega.actors needs pykka 4.x internals that are missing: {_missing}")


class _Wake:
    """Wakes an idle actor so that a pending injected crash takes effect."""


class _Inbox(queue.Queue[Envelope[Any]]):
    """Pykka's threading inbox, remembering the envelope being handled.

    ``_handle_receive`` gets only the message; the envelope says whether it was an
    ask (it has a reply future) or a tell.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current: Envelope[Any] | None = None

    def get(self, block: bool = True, timeout: float | None = None) -> Envelope[Any]:
        envelope = super().get(block, timeout)
        self.current = envelope
        return envelope


class OmegaActor(pykka.ThreadingActor):
    """A pykka ``ThreadingActor`` whose every failure its supervisor sees.

    Subclasses use pykka as usual (``on_start``, ``on_receive``, ``on_stop``,
    ``on_failure``, proxies) and must call ``super().__init__()``.
    """

    # A child abandoned after its shutdown timeout must not keep the process alive.
    use_daemon_thread: ClassVar[bool] = True

    # Ask-handler exceptions that are answers, not bugs: returned to the caller, counted,
    # and the actor keeps running. Anything else also crashes (and restarts) the actor.
    expected_errors: ClassVar[tuple[type[BaseException], ...]] = (OmegaError,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        self._omega_inbox = inbox
        self._omega_lock = threading.Lock()
        self._omega_crash: Exception | None = None
        self._omega_error: BaseException | None = None
        self._omega_link = _link.claim()
        if self._omega_link is not None:
            self._omega_link.attach(self, self.actor_urn)

    def inject_crash(self, error: Exception) -> None:
        """Thread-safe: fail with ``error`` before handling the next message.

        An actor busy in a handler fails when that handler returns; one stuck in it
        forever cannot be killed (Python threads cannot be), only abandoned.
        """
        with self._omega_lock:
            if self._omega_crash is None:
                self._omega_crash = error
        # Dead already: the actor is stopping and a pending crash is moot.
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Wake())

    # --- pykka internals -------------------------------------------------------

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        except BaseException as exc:
            # The thread itself is dying (pykka lets BaseException out of on_start):
            # record why, tell the supervisor below, and let it propagate.
            if self._omega_error is None:
                self._omega_error = exc
            raise
        finally:
            if self._omega_link is not None:
                self._omega_link.exited(self._omega_exit())

    def _actor_loop_setup(self) -> None:
        super()._actor_loop_setup()
        if self._omega_link is not None and not self.actor_stopped.is_set():
            self._omega_link.started()

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Every abnormal path in pykka goes through here; the first failure is the exit reason.
        if self._omega_error is None:
            self._omega_error = (
                exception_value if exception_value is not None else RuntimeError("unknown failure")
            )
        super()._handle_failure(exception_type, exception_value, traceback)

    def _handle_receive(self, message: Any) -> Any:
        crash = self._omega_crash
        if crash is not None:
            return self._crash_now(crash)
        if isinstance(message, _Wake):
            return None
        try:
            return super()._handle_receive(message)
        except Exception as exc:
            if self._is_ask():
                self._ask_failed(exc)
            raise

    # --- helpers ---------------------------------------------------------------

    def _is_ask(self) -> bool:
        envelope = self._omega_inbox.current
        return envelope is not None and envelope.reply_to is not None

    def _crash_now(self, crash: Exception) -> Any:
        if not self._is_ask():
            raise crash  # a tell: pykka's own failure path (log, on_failure, stop)
        # An ask: pykka would hand the exception to the caller and keep running, so
        # fail here as a tell would, and tell the caller the actor is gone.
        self._handle_failure(type(crash), crash, crash.__traceback__)
        try:
            self.on_failure(type(crash), crash, crash.__traceback__)
        except Exception:
            self._handle_failure(*sys.exc_info())
        raise pykka.ActorDeadError(f"{self} crashed: {crash}")

    def _ask_failed(self, exc: Exception) -> None:
        expected = isinstance(exc, self.expected_errors)
        if self._omega_link is not None:
            self._omega_link.ask_failed(exc, expected)
        if not expected:
            crash = AskHandlerError(f"ask handler raised {type(exc).__name__}: {exc}")
            crash.__cause__ = exc
            self.inject_crash(crash)

    def _omega_exit(self) -> _link.Exit:
        error = self._omega_error
        if error is None:
            return _link.Exit("normal")
        if isinstance(error, ActorKilled):
            return _link.Exit("killed", error)
        return _link.Exit("crash", error)
