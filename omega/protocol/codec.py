"""The wire form: a msgpack array ``[tag, version, field...]``, and its codec.

Messages and records are frozen dataclasses declared with ``@message``/``@record``
and ``wire(check)`` fields. Each class gets its checks, field names and limits
computed once, here, at import; ``encode``/``decode`` then do no per-call reflection.

Validation runs in ``__post_init__`` for a message built in Python, and on the raw
field tuple for a decoded one (the object is then built without re-running
``__init__``), so a message object is valid whichever way it was made.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, NoReturn, Self, TypeVar, dataclass_transform, overload

import msgpack

from omega.protocol.checks import Check, Invalid, TooMany
from omega.protocol.errors import BadRequest, TooLarge, UnknownType, VersionMismatch
from omega.protocol.limits import MAX_FRAME_BYTES, MAX_ITEMS, PROTOCOL_VERSION

__all__ = [
    "MAX_FRAME",
    "Message",
    "Record",
    "decode",
    "encode",
    "max_frame_for",
    "message",
    "record",
    "wire",
]

_T = TypeVar("_T")
_W = TypeVar("_W", bound="_Wire")
_M = TypeVar("_M", bound="Message")

# Everything the msgpack C extension or a check can raise on hostile input.
_FOREIGN = (
    ValueError,  # msgpack's UnpackValueError, ExtraData, FormatError, StackError; bad UTF-8
    TypeError,
    OverflowError,
    RecursionError,
    MemoryError,
    msgpack.UnpackException,
)


class _Wire:
    """Shared machinery of messages and records (validation, fast construction)."""

    __slots__ = ()

    _names: ClassVar[tuple[str, ...]] = ()
    _checks: ClassVar[tuple[Check, ...]] = ()
    # Generated per class by _compile(): check every field / check and build.
    _check_all: ClassVar[Callable[[tuple[Any, ...]], tuple[Any, ...]]]
    _build: ClassVar[Callable[[tuple[Any, ...]], Any]]

    def __post_init__(self) -> None:
        # Built in Python: validate, then store the normalized values (same order).
        cls = type(self)
        d = self.__dict__
        try:
            checked = cls._check_all(tuple(d.values()))
        except Invalid:
            _explain(cls, tuple(d.values()))
        d.update(zip(cls._names, checked, strict=True))
        self._whole()

    @classmethod
    def _from_fields(cls, values: tuple[Any, ...]) -> Self:
        """Validate raw field values (from the wire) and build without ``__init__``."""
        try:
            obj: Self = cls._build(values)
        except Invalid:
            _explain(cls, values)
        return obj

    def _check_whole(self) -> None:
        """Cross-field checks, after every field passed its own; raise ``Invalid``."""

    def _whole(self) -> None:
        try:
            self._check_whole()
        except Invalid as exc:
            err = TooLarge if exc.too_large else BadRequest
            raise err(f"{type(self).__name__}: {exc.reason}") from None


class Message(_Wire):
    """Base of every protocol message. ``TAG`` is its first element on the wire."""

    __slots__ = ()

    TAG: ClassVar[int]
    #: Largest encoded frame of this type, in bytes (nng ``recv_max_size``).
    MAX_BYTES: ClassVar[int]
    #: Whether msgpack maps may appear (JSON-like payloads only).
    _MAPS: ClassVar[bool] = False

    def encode(self) -> bytes:
        """This message as one frame."""
        return encode(self)

    @classmethod
    def decode(cls, frame: bytes | bytearray | memoryview) -> Self:
        """Decode a frame that must hold this type (see module ``decode``)."""
        msg = decode(frame, (cls,))
        if not isinstance(msg, cls):  # cannot happen: decode() returns allowed types only
            raise UnknownType(f"expected {cls.__name__}")
        return msg


class Record(_Wire):
    """A typed tuple nested inside a message (e.g. a catalog entry): an array on the wire."""

    __slots__ = ()


def _explain(cls: type[_Wire], values: tuple[Any, ...]) -> NoReturn:
    """Slow path, errors only: re-run the checks to name the failing field."""
    for name, check, value in zip(cls._names, cls._checks, values, strict=True):
        try:
            check(value)
        except Invalid as exc:
            err = TooLarge if exc.too_large else BadRequest
            raise err(f"{cls.__name__}.{name}: {exc.reason}") from None
    raise AssertionError("unreachable: a check failed and then passed")


def _compile(cls: type[_Wire]) -> None:
    """Generate the class's ``_check_all`` and ``_build`` (as dataclasses generates
    ``__init__``): a straight-line call of each field's check, no loop, no reflection."""
    names = cls._names
    ns: dict[str, Any] = {"cls": cls, "new": object.__new__, "setattr": object.__setattr__}
    ns.update((f"c{i}", check) for i, check in enumerate(cls._checks))
    unpack = "".join(f"v{i}, " for i in range(len(names)))
    calls = [f"c{i}(v{i})" for i in range(len(names))]
    items = ", ".join(f"{name!r}: {call}" for name, call in zip(names, calls, strict=True))
    whole = cls._check_whole is not _Wire._check_whole
    src = (
        "def _check_all(values):\n"
        f"    ({unpack}) = values\n"
        f"    return ({''.join(c + ', ' for c in calls)})\n"
        "def _build(values):\n"
        f"    ({unpack}) = values\n"
        "    obj = new(cls)\n"
        f"    setattr(obj, '__dict__', {{{items}}})\n"
        + ("    obj._whole()\n" if whole else "")
        + "    return obj\n"
    )
    exec(src, ns)  # names are dataclass field identifiers; checks are passed by reference
    cls._check_all = staticmethod(ns["_check_all"])  # type: ignore[assignment]
    cls._build = staticmethod(ns["_build"])  # type: ignore[assignment]


# --- declaring messages ----------------------------------------------------------


@overload
def wire(check: Check) -> Any: ...
@overload
def wire(check: Check, *, default: _T, hash: bool | None = None) -> _T: ...
def wire(check: Check, *, default: Any = dataclasses.MISSING, hash: bool | None = None) -> Any:
    """Declare a field and the check its value must pass (on the wire and in Python)."""
    return dataclasses.field(default=default, hash=hash, metadata={"check": check})


def _finish(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    for f in fields:
        if "check" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} must be declared with wire(check)")
    cls._names = tuple(f.name for f in fields)
    cls._checks = tuple(f.metadata["check"] for f in fields)
    _compile(cls)


_BY_TAG: dict[int, type[Message]] = {}
_MAX_BY_CLASS: dict[type[Message], int] = {}

#: Frame limit per message class (read-only view; filled as messages are declared).
MAX_FRAME: Mapping[type[Message], int] = MappingProxyType(_MAX_BY_CLASS)


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
def message(*, tag: int, max_bytes: int, maps: bool = False) -> Callable[[type[_M]], type[_M]]:
    """Declare a message class: a frozen dataclass with a unique tag and a frame limit.

    ``tag`` is 1-127 (one byte on the wire); ``maps`` allows msgpack maps in the frame
    (JSON-like payloads). An empty map costs ~80 bytes of memory per frame byte, so
    keep such types' ``max_bytes`` small (docs/protocol.md).
    """

    def decorate(cls: type[_M]) -> type[_M]:
        if not 0 < tag < 128:
            raise ValueError(f"tag {tag} must be 1-127 (a msgpack positive fixint)")
        if tag in _BY_TAG:
            raise ValueError(f"tag {tag} already used by {_BY_TAG[tag].__name__}")
        if not 0 < max_bytes <= MAX_FRAME_BYTES:
            raise ValueError(f"max_bytes {max_bytes} must be 1-{MAX_FRAME_BYTES}")
        cls = dataclasses.dataclass(frozen=True)(cls)
        _finish(cls)
        cls.TAG = tag
        cls.MAX_BYTES = max_bytes
        cls._MAPS = maps
        _BY_TAG[tag] = cls
        _MAX_BY_CLASS[cls] = max_bytes
        return cls

    return decorate


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
def record(cls: type[_W]) -> type[_W]:
    """Declare a record class (nested in messages; no tag, no version)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    _finish(cls)
    return cls


def nested(cls: type[Record]) -> Check:
    """Check for one record field: a record instance, or its fields as a row."""
    arity = len(cls._names)

    def check(value: Any) -> Any:
        if type(value) is cls:
            return value  # validated when it was built
        if type(value) is not tuple and type(value) is not list:
            raise Invalid(f"expected {cls.__name__}, got {type(value).__name__}")
        if len(value) != arity:
            raise Invalid(f"{cls.__name__} needs {arity} fields, got {len(value)}")
        try:
            return cls._from_fields(tuple(value))
        except BadRequest as exc:
            err = TooMany if isinstance(exc, TooLarge) else Invalid
            raise err(exc.message) from None

    return check


def max_frame_for(types: Iterable[type[Message]]) -> int:
    """The largest frame limit among ``types`` (for a socket's ``recv_max_size``)."""
    return max((_MAX_BY_CLASS[t] for t in types), default=MAX_FRAME_BYTES)


# --- encode ----------------------------------------------------------------------


def _pack_record(obj: Any) -> Any:
    if isinstance(obj, Record):
        return tuple(obj.__dict__.values())
    raise TypeError(f"cannot put {type(obj).__name__} on the wire")


_local = threading.local()


def _packer() -> Any:
    # Packer keeps an internal buffer, so one per thread; it resets itself on error.
    try:
        return _local.packer
    except AttributeError:
        _local.packer = msgpack.Packer(use_bin_type=True, default=_pack_record)
        return _local.packer


def _pack(values: tuple[Any, ...]) -> bytes:
    try:
        data: bytes = _packer().pack(values)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Only reachable by mutating a frozen message; e.g. a lone surrogate in a str.
        raise BadRequest(f"cannot encode: {exc}") from None
    return data


def encode(msg: Message) -> bytes:
    """``msg`` as a frame: ``[TAG, PROTOCOL_VERSION, *fields]`` in msgpack.

    Raises ``TooLarge`` if the frame is over the type's limit, ``UnknownType`` if
    ``msg`` is not a declared message.
    """
    cls = type(msg)
    limit = _MAX_BY_CLASS.get(cls)
    if limit is None:
        raise UnknownType(f"{cls.__name__} is not a protocol message")
    data = _pack((cls.TAG, PROTOCOL_VERSION, *msg.__dict__.values()))
    if len(data) > limit:
        raise TooLarge(f"{cls.__name__} is {len(data)} bytes, over its limit of {limit}")
    return data


def encode_fields(cls: type[Message], values: tuple[Any, ...]) -> bytes:
    """Pack already-validated field values of ``cls`` (used for signing)."""
    return _pack((cls.TAG, PROTOCOL_VERSION, *values))


# --- decode ----------------------------------------------------------------------


def _no_maps(_: Any) -> Any:
    raise BadRequest("unexpected map in a message that has none")


def decode(
    frame: bytes | bytearray | memoryview,
    allowed: Collection[type[Message]] | None = None,
) -> Message:
    """Decode one frame into a validated message.

    ``allowed`` restricts the accepted types (checked from the tag, before decoding).
    Raises only ``ProtocolError`` subclasses: ``TooLarge`` (over the global or the
    type's limit, or a list over its limit), ``UnknownType`` (unknown or unexpected
    tag), ``VersionMismatch``, ``BadRequest`` (anything else malformed).
    """
    if type(frame) is not bytes:
        if isinstance(frame, memoryview | bytearray):
            frame = bytes(frame)
        else:
            raise BadRequest(f"a frame is bytes, not {type(frame).__name__}")
    n = len(frame)
    if n > MAX_FRAME_BYTES:
        raise TooLarge(f"frame of {n} bytes is over the limit of {MAX_FRAME_BYTES}")
    # Peek the tag without decoding: array header (fix/16/32), then a positive fixint.
    head = frame[0] if n else 0
    if 0x90 <= head <= 0x9F:
        at = 1
    elif head == 0xDC:
        at = 3
    elif head == 0xDD:
        at = 5
    else:
        raise BadRequest("a frame must be a msgpack array")
    if n <= at + 1:
        raise BadRequest("frame truncated")
    cls = _BY_TAG.get(frame[at])
    if cls is None:
        raise UnknownType(f"unknown message tag {frame[at]}")
    if allowed is not None and cls not in allowed:
        raise UnknownType(f"{cls.__name__} is not accepted here")
    if n > cls.MAX_BYTES:
        raise TooLarge(f"{cls.__name__} frame of {n} bytes is over its limit of {cls.MAX_BYTES}")
    try:
        raw = msgpack.unpackb(
            frame,
            use_list=False,
            raw=False,
            strict_map_key=True,
            object_hook=None if cls._MAPS else _no_maps,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n if n < MAX_ITEMS else MAX_ITEMS,
            max_map_len=MAX_ITEMS if cls._MAPS else 0,
            max_ext_len=0,
        )
    except BadRequest:
        raise
    except _FOREIGN as exc:
        reason = str(exc) or type(exc).__name__
        raise BadRequest(f"malformed {cls.__name__} frame: {reason[:200]}") from None
    # The array header was checked above, so raw is a tuple starting with the tag.
    version = raw[1] if len(raw) > 1 else None
    # ErrorReply is read at any version, so a peer can always learn why.
    if (version != PROTOCOL_VERSION or type(version) is not int) and not (
        cls.TAG == _ERROR_TAG and type(version) is int
    ):
        raise VersionMismatch(f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    if len(raw) != len(cls._names) + 2:
        raise BadRequest(f"{cls.__name__} has {len(cls._names)} fields, got {len(raw) - 2}")
    try:
        return cls._from_fields(raw[2:])
    except _FOREIGN as exc:  # a check meeting a type it did not foresee
        raise BadRequest(f"malformed {cls.__name__}: {type(exc).__name__}") from None


# ErrorReply's tag is part of the protocol across versions (see messages.ErrorReply).
_ERROR_TAG = 3
