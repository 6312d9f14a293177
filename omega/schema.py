"""Typed loading of TOML tables into frozen dataclasses.

Every settings class in Omega is a frozen dataclass whose field annotations are the
schema: ``load(cls, table)`` checks each key against them (unknown key, wrong type)
and then runs the class's own ``__post_init__`` range checks, which raise
``SettingError(key, message)``. Errors carry the dotted key path so that the caller
(``omega.config``) can name the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class SettingError(ValueError):
    """A setting has a bad value. ``key`` is the dotted path from the file's root."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def require(condition: bool, key: str, message: str) -> None:
    """Raise ``SettingError(key, message)`` unless ``condition`` holds."""
    if not condition:
        raise SettingError(key, message)


def load(cls: type[T], table: Any, path: str = "") -> T:
    """Build ``cls`` from a TOML table, strictly.

    Missing keys take the dataclass default (a field without one is required).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(table, dict):
        raise SettingError(path or "<root>", f"expected a table, got {_tname(table)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise SettingError(_join(path, key), f"unknown key (known keys: {known})")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key = _join(path, name)
        if name in table:
            values[name] = _convert(hints[name], table[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SettingError(key, "missing required key")
    try:
        return cls(**values)
    except SettingError as exc:
        # __post_init__ names keys relative to its own table.
        if path and not exc.key.startswith(path + "."):
            raise SettingError(_join(path, exc.key), exc.message) from None
        raise


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except NameError:
        # A settings class may import a nested settings class lazily (only under
        # TYPE_CHECKING, to keep heavy modules out of other roles): its default
        # factory then tells which class the annotation names.
        local: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING:
                t = type(f.default_factory())
                local[t.__name__] = t
            elif f.default is not dataclasses.MISSING and dataclasses.is_dataclass(f.default):
                t = type(f.default)
                local[t.__name__] = t
        return get_type_hints(cls, localns=local)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tname(value: Any) -> str:
    return type(value).__name__


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or type(value) is not type(allowed[0]):
            raise SettingError(
                key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in (a for a in get_args(tp) if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except SettingError as exc:
                errors.append(exc.message)
        raise SettingError(key, " / ".join(errors))
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise SettingError(key, f"expected an array, got {_tname(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise SettingError(key, f"expected an array of {len(args)} items, got {len(value)}")
        return tuple(
            _convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return load(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingError(key, f"expected a boolean, got {_tname(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(key, f"expected an integer, got {_tname(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingError(key, f"expected a number, got {_tname(value)}")
        if not math.isfinite(value):
            raise SettingError(key, "must be finite")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingError(key, f"expected a string, got {_tname(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise SettingError(key, f"expected a path string, got {_tname(value)}")
        return Path(value)
    if tp is typing.Any:
        return value
    raise TypeError(f"unsupported settings type {tp!r} at {key}")
