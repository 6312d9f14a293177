"""The supervision engine: OTP-style supervisors for pykka actors.

Each supervisor is a plain object with one daemon thread that waits on its own
event queue (child exits, stop, kill, retries) — like an OTP supervisor process,
it does one thing at a time and blocks while it starts or stops a child. A child
supervisor is another such object; its parent sees it through the same ``Link``
as a worker, so "a child supervisor gave up" is just "a child exited abnormally".

All state that ``tree()``, ``ref()`` and ``kill()`` read (from any thread, e.g.
the control socket) is guarded by one lock per tree, never held while waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pykka

from omega.actors.errors import (
    ActorKilled,
    ChildNotRunningError,
    ChildStartError,
    RestartLimitReached,
    SpecError,
    SupervisionError,
    UnknownChildError,
)
from omega.actors.link import Exit, Link, binding
from omega.actors.spec import ChildSpec, Spec, SupervisorSpec
from omega.actors.strategy import RestartIntensity, restart_plan, wants_restart

__all__ = ["ChildState", "SupervisorHandle", "start_tree"]

log = logging.getLogger("omega.actors")

ChildState = Literal["starting", "running", "restarting", "stopped", "failed"]
Clock: TypeAlias = Callable[[], float]


class _Slot:
    """One child position in a supervisor, across its incarnations. Guarded by the tree lock."""

    def __init__(self, spec: Spec, path: str) -> None:
        self.spec = spec
        self.path = path
        self.state: ChildState = "stopped"
        self.starts = 0
        self.ask_failures = 0
        self.last_exit: str | None = None
        self.link: Link | None = None  # the running incarnation, if any
        self.ref: pykka.ActorRef[Any] | None = None  # workers only
        self.engine: _Supervisor | None = None  # supervisors: current or last incarnation
        self.retired = False  # a temporary child that ended: never started again

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        node: dict[str, Any] = {
            "name": spec.name,
            "path": self.path,
            "kind": "supervisor" if isinstance(spec, SupervisorSpec) else "worker",
            "state": self.state,
            "restart": spec.restart,
            "restarts": max(0, self.starts - 1),
            "ask_failures": self.ask_failures,
            "last_exit": self.last_exit,
            "children": [],
        }
        if isinstance(spec, SupervisorSpec):
            node["strategy"] = spec.strategy
            slots = (
                self.engine.slots
                if self.engine is not None
                else [_Slot(c, f"{self.path}.{c.name}") for c in spec.children]
            )
            node["children"] = [s.describe() for s in slots]
        return node

    def walk(self) -> Iterator[_Slot]:
        yield self
        if self.engine is not None:
            for slot in self.engine.slots:
                yield from slot.walk()


@dataclass(frozen=True)
class _Exited:
    slot: _Slot
    link: Link
    exit: Exit


@dataclass(frozen=True)
class _TryAgain:
    slot: _Slot
    exit: Exit


@dataclass(frozen=True)
class _Stop:
    pass


@dataclass(frozen=True)
class _Kill:
    error: Exception


_Event: TypeAlias = _Exited | _TryAgain | _Stop | _Kill


class _Supervisor:
    """One incarnation of one supervisor."""

    def __init__(
        self, spec: SupervisorSpec, path: str, lock: threading.RLock, clock: Clock, link: Link
    ) -> None:
        self.spec = spec
        self.path = path
        self.slots = [_Slot(child, f"{path}.{child.name}") for child in spec.children]
        self._lock = lock
        self._clock = clock
        self._link = link
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._intensity = RestartIntensity(spec.max_restarts, spec.within_s, clock)
        self._thread = threading.Thread(target=self._run, name=f"omega-sup-{path}", daemon=True)
        link.attach(self)

    def begin(self) -> None:
        self._thread.start()

    def is_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # --- requests from other threads ------------------------------------------

    def request_stop(self) -> None:
        self._events.put(_Stop())

    def inject_crash(self, error: Exception) -> None:
        self._events.put(_Kill(error))

    # --- the supervisor thread ------------------------------------------------

    def _run(self) -> None:
        exit = Exit("normal")
        try:
            failure = self._start_initial()
            if failure is not None:
                exit = failure
                return
            self._link.started()
            exit = self._loop()
        except Exception as exc:
            # A bug here must still stop the children and reach the parent.
            log.exception("supervisor crashed", extra={"fields": {"supervisor": self.path}})
            self._terminate_all()
            exit = Exit("crash", exc)
        finally:
            self._link.exited(exit)

    def _start_initial(self) -> Exit | None:
        for i, slot in enumerate(self.slots):
            with self._lock:
                slot.state = "starting"
            failure = self._start(slot)
            if failure is None:
                continue
            log.error(
                "child failed to start",
                extra={"fields": {"child": slot.path, "exit": failure.describe()}},
            )
            with self._lock:
                slot.state = "failed"
                slot.last_exit = failure.describe()
            for started in reversed(self.slots[:i]):
                self._terminate(started, "stopped")
            error = ChildStartError(slot.path, failure.describe())
            error.__cause__ = failure.error
            return Exit("crash", error)
        return None

    def _loop(self) -> Exit:
        while True:
            event = self._events.get()
            if isinstance(event, _Stop):
                self._terminate_all()
                return Exit("normal")
            if isinstance(event, _Kill):
                log.warning(
                    "supervisor killed",
                    extra={"fields": {"supervisor": self.path, "reason": str(event.error)}},
                )
                self._terminate_all()
                return Exit("killed", event.error)
            if isinstance(event, _Exited):
                slot = event.slot
                if slot.link is not event.link:
                    continue  # an incarnation already stopped or abandoned by us
                with self._lock:
                    slot.link = None
                    slot.ref = None
                    slot.last_exit = event.exit.describe()
                    slot.state = "failed" if event.exit.abnormal else "stopped"
                gave_up = self._child_exited(slot, event.exit)
            else:
                slot = event.slot
                if slot.link is not None or slot.state != "restarting":
                    continue  # restarted meanwhile by a sibling's restart
                gave_up = self._restart(slot, event.exit)
            if gave_up is not None:
                self._terminate_all()
                return gave_up

    def _child_exited(self, slot: _Slot, exit: Exit) -> Exit | None:
        restart = wants_restart(slot.spec.restart, exit.abnormal)
        log_fn = log.error if exit.abnormal else log.info
        log_fn(
            "child exited",
            extra={
                "fields": {
                    "child": slot.path,
                    "exit": exit.describe(),
                    "action": "restart" if restart else "none",
                }
            },
        )
        if not restart:
            if slot.spec.restart == "temporary":
                with self._lock:
                    slot.retired = True
            return None
        return self._restart(slot, exit)

    def _restart(self, slot: _Slot, exit: Exit) -> Exit | None:
        if not self._intensity.add():
            error = RestartLimitReached(
                self.path, self.spec.max_restarts, self.spec.within_s, slot.path, exit.describe()
            )
            error.__cause__ = exit.error
            log.error(
                "restart intensity reached; giving up",
                extra={"fields": {"supervisor": self.path, "child": slot.path}},
            )
            return Exit("crash", error)
        plan = restart_plan(self.spec.strategy, len(self.slots), self.slots.index(slot))
        for i in plan.stop:
            self._terminate(self.slots[i], "restarting")
        to_start = [self.slots[i] for i in plan.start if not self.slots[i].retired]
        with self._lock:
            for s in to_start:
                s.state = "restarting"
        for s in to_start:
            failure = self._start(s)
            if failure is not None:
                # Like OTP's try_again_restart: retry through the queue (counted again),
                # so a stop request can get in between two attempts.
                log.error(
                    "child failed to restart",
                    extra={"fields": {"child": s.path, "exit": failure.describe()}},
                )
                with self._lock:
                    s.last_exit = failure.describe()
                self._events.put(_TryAgain(s, failure))
                break
        return None

    def _start(self, slot: _Slot) -> Exit | None:
        """Start one incarnation and wait for it to be up; the failure if it is not."""
        link = Link(
            slot.path,
            on_exit=lambda lk, ex: self._events.put(_Exited(slot, lk, ex)),
            on_ask_failure=lambda exc, expected: self._ask_failed(slot, exc, expected),
        )
        with self._lock:
            slot.starts += 1
        spec = slot.spec
        ref: pykka.ActorRef[Any] | None = None
        if isinstance(spec, SupervisorSpec):
            engine = _Supervisor(spec, slot.path, self._lock, self._clock, link)
            with self._lock:
                slot.engine = engine
            engine.begin()
            # Bounded: every worker below has its own start timeout.
            outcome = link.wait_started(None)
        else:
            try:
                with binding(link):
                    ref = spec.start()
            except Exception as exc:
                self._abandon(link, f"{slot.path}: start() raised")
                return Exit("crash", exc)
            if link.urn is None or not isinstance(ref, pykka.ActorRef) or ref.actor_urn != link.urn:
                self._abandon(link, f"{slot.path}: start() returned a foreign ref")
                if isinstance(ref, pykka.ActorRef):
                    ref.stop(block=False)
                reason = (
                    f"start() returned {ref!r}; it must construct an OmegaActor in the calling "
                    "thread and return that actor's ref"
                )
                return Exit("crash", ChildStartError(slot.path, reason))
            outcome = link.wait_started(spec.start_timeout_s)
        if outcome == "started":
            with self._lock:
                slot.link = link
                slot.ref = ref
                slot.state = "running"
            return None
        if outcome == "exited":
            exit = link.exit
            assert exit is not None
            if exit.abnormal:
                return exit
            return Exit("crash", ChildStartError(slot.path, "stopped before it started"))
        assert isinstance(spec, ChildSpec)
        self._abandon(link, f"{slot.path}: on_start did not finish within {spec.start_timeout_s} s")
        reason = f"on_start did not finish within {spec.start_timeout_s} s"
        return Exit("crash", ChildStartError(slot.path, reason))

    def _abandon(self, link: Link, reason: str) -> None:
        """Leave an incarnation behind; it fails at its next message, if it ever gets one."""
        if link.target is not None:
            log.warning("child abandoned", extra={"fields": {"child": link.path, "reason": reason}})
            link.target.inject_crash(ActorKilled(reason))

    def _terminate(self, slot: _Slot, then: ChildState) -> None:
        """Stop one running child in order, waiting at most its ``shutdown_s``."""
        link, ref, engine = slot.link, slot.ref, slot.engine
        state: ChildState = "stopped" if slot.spec.restart == "temporary" else then
        with self._lock:
            slot.link = None  # its exit event is now stale
            slot.ref = None
            if link is None:
                if slot.state in ("starting", "restarting", "running"):
                    slot.state = state
                if slot.spec.restart == "temporary":
                    slot.retired = True
                return
        spec = slot.spec
        if isinstance(spec, SupervisorSpec):
            assert engine is not None
            engine.request_stop()
            done = link.wait_exited(None)  # bounded by its children's shutdown timeouts
        else:
            assert ref is not None
            ref.stop(block=False)  # pykka: after the messages already queued
            done = link.wait_exited(spec.shutdown_s)
        exit = link.exit
        if not done:
            assert isinstance(spec, ChildSpec)
            reason = f"did not stop within {spec.shutdown_s} s"
            self._abandon(link, f"{slot.path}: {reason}")
            last = f"abandoned: {reason}"
        else:
            assert exit is not None
            last = "shutdown" if not exit.abnormal else f"shutdown: {exit.describe()}"
            if exit.abnormal:
                log.warning(
                    "child failed while stopping",
                    extra={"fields": {"child": slot.path, "exit": exit.describe()}},
                )
        with self._lock:
            slot.state = state
            slot.last_exit = last
            if slot.spec.restart == "temporary":
                slot.retired = True

    def _terminate_all(self) -> None:
        for slot in reversed(self.slots):
            self._terminate(slot, "stopped")

    def _ask_failed(self, slot: _Slot, exc: BaseException, expected: bool) -> None:
        with self._lock:
            slot.ask_failures += 1
        (log.info if expected else log.error)(
            "ask handler raised",
            extra={
                "fields": {
                    "child": slot.path,
                    "error": f"{type(exc).__name__}: {exc}",
                    "expected": expected,
                }
            },
        )


class SupervisorHandle:
    """The running root supervisor. Every method is thread-safe.

    Names given to ``ref``/``kill`` are dotted paths from the root (``"root.store"``)
    or any unique dotted suffix of one (``"store"``, ``"federation.store"``).
    """

    def __init__(
        self,
        spec: SupervisorSpec,
        clock: Clock,
        on_give_up: Callable[[SupervisionError], None] | None,
    ) -> None:
        self.spec = spec
        self._lock = threading.RLock()
        self._on_give_up = on_give_up
        self._root = _Slot(spec, spec.name)
        self._error: SupervisionError | None = None
        # Set after on_give_up has returned, so wait()/stop() never race the callback.
        self._done = threading.Event()
        self._link = Link(spec.name, on_exit=self._root_exited, on_ask_failure=lambda e, x: None)
        self._engine = _Supervisor(spec, spec.name, self._lock, clock, self._link)
        self._root.engine = self._engine
        self._root.starts = 1
        self._root.state = "starting"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> ChildState:
        with self._lock:
            return self._root.state

    @property
    def error(self) -> SupervisionError | None:
        """Why the root gave up (the error passed to ``on_give_up``); None otherwise."""
        with self._lock:
            return self._error

    def tree(self) -> dict[str, Any]:
        """A snapshot: ``name, path, kind, state, restart, restarts, ask_failures,
        last_exit, children`` (and ``strategy`` for supervisors), nested."""
        with self._lock:
            return self._root.describe()

    def ref(self, name: str) -> pykka.ActorRef[Any]:
        """The current ref of worker ``name``; it changes on every restart."""
        with self._lock:
            slot = self._find(name)
            if isinstance(slot.spec, SupervisorSpec):
                raise UnknownChildError(name, f"{slot.path} is a supervisor, not an actor")
            if slot.ref is None:
                raise ChildNotRunningError(slot.path, slot.state)
            return slot.ref

    def kill(self, name: str) -> None:
        """Crash child ``name`` on purpose (an abnormal exit: even transient children
        restart). A supervisor stops its children and fails to its parent."""
        with self._lock:
            slot = self._find(name)
            link = slot.link
            if link is None or link.target is None:
                raise ChildNotRunningError(slot.path, slot.state)
            log.warning("killing child", extra={"fields": {"child": slot.path}})
            link.target.inject_crash(ActorKilled(f"{slot.path} killed"))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the whole tree in order (reverse start order, each child within its
        ``shutdown_s``). True once the root has ended, False if ``timeout`` ran out."""
        self._engine.request_stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the root has ended (stopped, or given up and ``on_give_up``
        has returned); False on timeout."""
        if self._engine.is_current_thread():
            # Called from on_give_up: the root has ended; waiting for ourselves would hang.
            return self._link.wait_exited(0)
        return self._done.wait(timeout)

    def __enter__(self) -> SupervisorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- internals -------------------------------------------------------------

    def _start(self) -> None:
        self._engine.begin()
        if self._link.wait_started(None) == "started":
            with self._lock:
                if self._root.state == "starting":  # else it already ended
                    self._root.state = "running"
                    self._root.link = self._link
            return
        exit = self._link.exit
        assert exit is not None
        if isinstance(exit.error, SupervisionError):
            raise exit.error
        raise ChildStartError(self.spec.name, exit.describe()) from exit.error

    def _root_exited(self, link: Link, exit: Exit) -> None:
        try:
            self._give_up(link, exit)
        finally:
            self._done.set()

    def _give_up(self, link: Link, exit: Exit) -> None:
        error = exit.error
        if exit.abnormal and not isinstance(error, SupervisionError):
            wrapped = SupervisionError(f"{self.spec.name}: {exit.describe()}")
            wrapped.__cause__ = error
            error = wrapped
        give_up = exit.abnormal and link.was_started  # a failed start raises from start_tree
        with self._lock:
            self._root.link = None
            self._root.state = "failed" if exit.abnormal else "stopped"
            self._root.last_exit = exit.describe()
            if give_up:
                assert isinstance(error, SupervisionError)
                self._error = error
        if not give_up:
            return
        assert isinstance(error, SupervisionError)
        log.critical(
            "root supervisor gave up",
            extra={"fields": {"supervisor": self.spec.name, "exit": exit.describe()}},
        )
        if self._on_give_up is not None:
            try:
                self._on_give_up(error)
            except Exception:
                log.exception("on_give_up raised")

    def _find(self, name: str) -> _Slot:
        matches = [s for s in self._root.walk() if s.path == name or s.path.endswith("." + name)]
        if not matches:
            known = ", ".join(s.path for s in self._root.walk())
            raise UnknownChildError(name, f"no such child (known: {known})")
        if len(matches) > 1:
            paths = ", ".join(s.path for s in matches)
            raise UnknownChildError(name, f"ambiguous, matches {paths}")
        return matches[0]


def start_tree(
    spec: SupervisorSpec,
    *,
    clock: Clock = time.monotonic,
    on_give_up: Callable[[SupervisionError], None] | None = None,
) -> SupervisorHandle:
    """Start a supervision tree; return once every child has started, in order.

    Raises ``ChildStartError`` if any child fails to start (the ones already started
    are stopped first, in reverse order). Later, if the root gives up (restart
    intensity, kill, or a bug), its children are stopped and ``on_give_up(error)``
    is called from the root's thread — a CLI signals its main thread (or calls
    ``os._exit``) from there, since ``sys.exit`` in that thread would not end the
    process; ``handle.wait()`` also returns then.
    """
    if not isinstance(spec, SupervisorSpec):
        raise SpecError("invalid_root", "spec", spec, "the root of a tree must be a SupervisorSpec")
    handle = SupervisorHandle(spec, clock, on_give_up)
    handle._start()
    return handle
