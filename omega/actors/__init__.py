"""Actors and their OTP-style supervision (pykka has no supervisors).

Trees are data (``ChildSpec``, ``SupervisorSpec``), started by ``start_tree``;
every actor subclasses ``OmegaActor`` so its supervisor sees every failure.
See docs/supervision.md.
"""

from __future__ import annotations

from omega.actors.base import OmegaActor
from omega.actors.errors import (
    ActorKilled,
    AskHandlerError,
    ChildNotRunningError,
    ChildStartError,
    RestartLimitReached,
    SpecError,
    SupervisionError,
    UnknownChildError,
)
from omega.actors.spec import (
    RESTART_TYPES,
    STRATEGIES,
    ChildSpec,
    RestartType,
    Strategy,
    SupervisorSpec,
)
from omega.actors.supervisor import ChildState, SupervisorHandle, start_tree

__all__ = [
    "RESTART_TYPES",
    "STRATEGIES",
    "ActorKilled",
    "AskHandlerError",
    "ChildNotRunningError",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "OmegaActor",
    "RestartLimitReached",
    "RestartType",
    "SpecError",
    "Strategy",
    "SupervisionError",
    "SupervisorHandle",
    "SupervisorSpec",
    "UnknownChildError",
    "start_tree",
]
