"""Supervision trees as data: ``ChildSpec`` and ``SupervisorSpec``.

Like OTP's child spec maps (``#{id, start, restart, shutdown}``) with defaults in
one place and a check per field, but as frozen dataclasses validated on
construction: a bad spec raises ``SpecError`` naming the field before anything
starts. Specs hold no running state, so ``tree_for(role, cfg)`` can be a pure
function and the same spec can be started many times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pykka

from omega.actors.errors import SpecError

__all__ = [
    "RESTART_TYPES",
    "STRATEGIES",
    "ChildSpec",
    "RestartType",
    "Spec",
    "Strategy",
    "SupervisorSpec",
]

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")
STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")

# Names become dotted paths ("root.store"), so a name may not contain a dot.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class ChildSpec:
    """A worker: an ``OmegaActor`` built by ``start()``.

    ``start`` must construct the actor in the calling thread (``MyActor.start(...)``
    or a ``functools.partial`` of it) and return its ref. ``shutdown_s`` is how long
    an orderly stop may take before the child is abandoned (0: do not wait);
    ``start_timeout_s`` bounds ``on_start``.
    """

    name: str
    start: Callable[[], pykka.ActorRef[Any]]
    restart: RestartType = "permanent"
    shutdown_s: float = 5.0
    start_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not callable(self.start):
            raise SpecError(
                "invalid_start", "start", self.start, f"child {self.name!r}: not callable"
            )
        _check_restart(self.name, self.restart)
        _check_seconds(self.name, "shutdown_s", "invalid_shutdown", self.shutdown_s, zero_ok=True)
        _check_seconds(
            self.name,
            "start_timeout_s",
            "invalid_start_timeout",
            self.start_timeout_s,
            zero_ok=False,
        )


@dataclass(frozen=True)
class SupervisorSpec:
    """A supervisor and its children, started in order and stopped in reverse.

    More than ``max_restarts`` restarts within ``within_s`` seconds make it stop its
    children and fail to its parent. ``restart`` applies when it is itself a child.
    ``children`` may be given as a list; it is stored as a tuple.
    """

    name: str
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    within_s: float = 5.0
    children: tuple[ChildSpec | SupervisorSpec, ...] = ()
    restart: RestartType = "permanent"

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.strategy, str) or self.strategy not in STRATEGIES:
            raise SpecError(
                "invalid_strategy",
                "strategy",
                self.strategy,
                f"supervisor {self.name!r}: must be one of {', '.join(STRATEGIES)}",
            )
        if (
            isinstance(self.max_restarts, bool)
            or not isinstance(self.max_restarts, int)
            or self.max_restarts < 0
        ):
            raise SpecError(
                "invalid_intensity",
                "max_restarts",
                self.max_restarts,
                f"supervisor {self.name!r}: must be an integer >= 0",
            )
        _check_seconds(self.name, "within_s", "invalid_period", self.within_s, zero_ok=False)
        _check_restart(self.name, self.restart)
        if not isinstance(self.children, tuple | list):
            raise SpecError(
                "invalid_children",
                "children",
                self.children,
                f"supervisor {self.name!r}: must be a sequence of ChildSpec or SupervisorSpec",
            )
        children = tuple(self.children)
        seen: set[str] = set()
        for child in children:
            if not isinstance(child, ChildSpec | SupervisorSpec):
                raise SpecError(
                    "invalid_children",
                    "children",
                    child,
                    f"supervisor {self.name!r}: not a ChildSpec or SupervisorSpec",
                )
            if child.name in seen:
                raise SpecError(
                    "duplicate_child_name",
                    "children",
                    child.name,
                    f"supervisor {self.name!r}: two children share this name",
                )
            seen.add(child.name)
        object.__setattr__(self, "children", children)


Spec: TypeAlias = ChildSpec | SupervisorSpec


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(
            "invalid_name",
            "name",
            name,
            "must be a non-empty string of letters, digits, '_' or '-' (no dots)",
        )


def _check_restart(owner: str, restart: object) -> None:
    if not isinstance(restart, str) or restart not in RESTART_TYPES:
        raise SpecError(
            "invalid_restart_type",
            "restart",
            restart,
            f"{owner!r}: must be one of {', '.join(RESTART_TYPES)}",
        )


def _check_seconds(owner: str, field: str, code: str, value: object, *, zero_ok: bool) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
    )
    if not ok:
        bound = ">= 0" if zero_ok else "> 0"
        raise SpecError(
            code, field, value, f"{owner!r}: must be a finite number of seconds {bound}"
        )
