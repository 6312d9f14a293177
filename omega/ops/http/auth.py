"""Bearer tokens with roles: read < operator < admin.

Each role has at most one token (a secret from the environment or a file, see
``[secrets]``). ``Tokens.role_of`` compares the presented token with every
configured one in constant time (``hmac.compare_digest``), all of them each time,
so the answer's timing says nothing about which token came close. Tokens are
never logged and never part of an error message.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from omega.errors import ConfigError


class Role(IntEnum):
    """What a caller may do; a higher role may do everything a lower one may."""

    READ = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


#: ``[secrets]`` key of each role's token.
SECRET_OF_ROLE: dict[Role, str] = {
    Role.READ: "read_token",
    Role.OPERATOR: "operator_token",
    Role.ADMIN: "admin_token",
}
MIN_TOKEN_BYTES = 16


class AuthError(Exception):
    """401 (``status``) or 403: the request is refused before anything is read."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Tokens:
    """The configured tokens, role by role (a role may have none)."""

    by_role: Mapping[Role, bytes] = field(default_factory=dict)

    @classmethod
    def from_secrets(cls, secrets: Mapping[str, bytes], source: str = "<secrets>") -> Tokens:
        """Tokens from the node's resolved secrets; weak or shared tokens are a ConfigError."""
        found: dict[Role, bytes] = {}
        for role, key in SECRET_OF_ROLE.items():
            token = secrets.get(key)
            if token is None:
                continue
            if len(token) < MIN_TOKEN_BYTES:
                raise ConfigError(source, f"secrets.{key}",
                                  f"an admin API token must be at least {MIN_TOKEN_BYTES} bytes")
            if token in found.values():
                raise ConfigError(source, f"secrets.{key}",
                                  "each role needs its own token (two roles share one)")
            found[role] = token
        return cls(found)

    def roles(self) -> list[str]:
        return [r.label for r in sorted(self.by_role)]

    def role_of(self, presented: bytes) -> Role | None:
        """The role ``presented`` grants, or None; constant time over every token."""
        granted: Role | None = None
        for role, token in self.by_role.items():
            # compare_digest on every token, no early exit.
            if hmac.compare_digest(presented, token) and granted is None:
                granted = role
        return granted

    def check(self, authorization: str | None, needed: Role) -> Role:
        """The caller's role from an ``Authorization`` header, if it is at least ``needed``.

        Raises ``AuthError(401)`` for a missing or unknown token, ``AuthError(403)``
        for a valid token whose role is too weak.
        """
        if not authorization:
            raise AuthError(401, "missing bearer token (Authorization: Bearer <token>)")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError(401, "expected Authorization: Bearer <token>")
        role = self.role_of(value.strip().encode())
        if role is None:
            raise AuthError(401, "unknown token")
        if role < needed:
            raise AuthError(403, f"this needs the {needed.label} role; the token has "
                                 f"{role.label}")
        return role
