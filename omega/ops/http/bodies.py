"""Request bodies: strict JSON, checked against the OpenAPI document's own schemas.

``parse_body(raw, schema_name)`` returns the decoded body or raises ``BadBody``
naming the field at fault (the API answers 422 with it). NaN and Infinity, which
Python's ``json`` would accept, are refused; so are bodies over ``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from omega.ops.http.openapi import ID_PATTERN, SCHEMAS

MAX_BODY_BYTES = 64 * 1024
_ID = re.compile(ID_PATTERN.replace("$", r"\Z"))
_VALIDATORS = {name: Draft202012Validator(SCHEMAS[name])
               for name in ("ContentItem", "DeviceIds", "TriggerRequest")}


class BadBody(Exception):
    """A body that is not what the operation takes; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _no_constant(name: str) -> Any:
    raise BadBody("<body>", f"{name} is not a JSON number")


def decode_json(raw: bytes) -> Any:
    if len(raw) > MAX_BODY_BYTES:
        raise BadBody("<body>", f"body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise BadBody("<body>", "empty body; expected a JSON object")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, BadBody):
            raise
        raise BadBody("<body>", f"not valid JSON: {exc}") from None


def _field_of(err: ValidationError) -> str:
    path = [str(p) for p in err.absolute_path]
    if err.validator == "required" and isinstance(err.instance, dict):
        wanted: Any = err.validator_value
        missing = [k for k in wanted if k not in err.instance]
        if missing:
            path.append(str(missing[0]))
    elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
        schema: Any = err.schema
        allowed = set(schema.get("properties") or {}) if isinstance(schema, dict) else set()
        extra = sorted(str(k) for k in err.instance if k not in allowed)
        if extra:
            path.append(extra[0])
    elif err.validator == "not" and isinstance(err.instance, dict):
        path.append("text")
    return ".".join(path) or "<body>"


def check(body: Any, schema_name: str) -> Any:
    """Raise ``BadBody`` for the first (deepest-first) schema violation."""
    errors = sorted(_VALIDATORS[schema_name].iter_errors(body),
                    # Deepest first; at one depth an unknown key says most (a misspelling).
                    key=lambda e: (-len(e.absolute_path), e.validator != "additionalProperties",
                                   str(e.absolute_path)))
    if errors:
        err = errors[0]
        message = ("give either embedding or text, not both" if err.validator == "not"
                   else err.message if len(err.message) <= 200 else err.message[:200] + "…")
        raise BadBody(_field_of(err), message)
    return body


def parse_body(raw: bytes, schema_name: str) -> Any:
    return check(decode_json(raw), schema_name)


def is_id(value: str) -> bool:
    """Full-string match (the schema's ``$`` lets a trailing newline through)."""
    return bool(_ID.match(value))
