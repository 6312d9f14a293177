"""Supervision errors: subclasses of ``omega.errors.OmegaError``."""

from __future__ import annotations

from typing import Any

from omega.errors import OmegaError

__all__ = [
    "ActorKilled",
    "AskHandlerError",
    "ChildNotRunningError",
    "ChildStartError",
    "RestartLimitReached",
    "SpecError",
    "SupervisionError",
    "UnknownChildError",
]


class SupervisionError(OmegaError):
    """Base of every error the supervision engine raises or reports."""


class SpecError(SupervisionError):
    """A ``ChildSpec`` or ``SupervisorSpec`` field is invalid.

    ``code`` names the problem the way OTP's ``{invalid_restart_type, X}`` does;
    ``field`` is the dataclass field, ``value`` the rejected value.
    """

    def __init__(self, code: str, field: str, value: Any, message: str) -> None:
        self.code = code
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"{code}: {field}={value!r}: {message}")


class ChildStartError(SupervisionError):
    """A child could not be started (``start()`` raised, ``on_start`` failed or timed out)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: failed to start: {reason}")


class UnknownChildError(SupervisionError):
    """No child, or more than one, matches the name given to ``kill``/``ref``."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(f"{name!r}: {message}")


class ChildNotRunningError(SupervisionError):
    """The child exists but has no running incarnation (restarting, stopped or failed)."""

    def __init__(self, path: str, state: str) -> None:
        self.path = path
        self.state = state
        super().__init__(f"{path} is not running (state {state})")


class RestartLimitReached(SupervisionError):
    """A supervisor saw more than ``max_restarts`` restarts within ``within_s`` and gave up."""

    def __init__(
        self, path: str, max_restarts: int, within_s: float, child: str, exit: str
    ) -> None:
        self.path = path
        self.max_restarts = max_restarts
        self.within_s = within_s
        self.child = child
        self.exit = exit
        super().__init__(
            f"{path}: more than {max_restarts} restarts within {within_s} s; last: {child} ({exit})"
        )


class ActorKilled(SupervisionError):
    """The exit reason of a child killed on purpose (chaos ``kill``, abandoned start or stop)."""


class AskHandlerError(SupervisionError):
    """The exit reason of an actor whose ask handler raised an unexpected exception.

    The caller got the original exception; ``__cause__`` holds it too.
    """
