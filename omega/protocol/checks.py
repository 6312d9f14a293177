"""Field checks: small closures that validate a value and return it normalized.

A check takes one field value (as decoded from msgpack, or as given to a
constructor) and returns the value to store, or raises ``Invalid``. Normalization
is limited to lossless conveniences: a list becomes a tuple, an int in a float field
becomes a float, ``bytearray`` becomes ``bytes``. Booleans are never numbers.

Lists of rows (neighbour lists, counts) are checked a column at a time with C-level
builtins (``zip``, ``map``, ``set``, ``str.join``, one regex per column) rather than a
Python call per element, because these lists sit on the request path.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from itertools import chain, islice, repeat
from typing import Any

from omega.protocol.limits import (
    CONTENT_ID_MAX_LEN,
    EMBEDDING_BYTES,
    INT64_MIN,
    JSON_MAX_DEPTH,
    JSON_MAX_NODES,
    JSON_MAX_STR_LEN,
    UINT63_MAX,
)

#: A field check: returns the (normalized) value or raises ``Invalid``.
Check = Callable[[Any], Any]
#: A column check: takes the tuple of one column's values, returns it normalized.
ColumnCheck = Callable[[tuple[Any, ...]], tuple[Any, ...]]


class Invalid(Exception):
    """A value failed a check. Internal: the codec turns it into a ``ProtocolError``."""

    too_large = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TooMany(Invalid):
    """A list or string is over its length limit (wire code ``too_large``)."""

    too_large = True


_ID_CHARS = re.compile(r"[A-Za-z0-9._:\-]*")
_ADDRESS = re.compile(r"[A-Za-z0-9._:/+\-\[\]@%]*")
_PRINTABLE = re.compile(r"[\x21-\x7e]*")
_SEQ_TYPES = (tuple, list)
_FLOAT_ONLY = frozenset({float})
_FLOAT_OR_INT = frozenset({float, int})
_INT_ONLY = frozenset({int})
_STR_ONLY = frozenset({str})
_BYTES_ONLY = frozenset({bytes})
_ROW_TYPES = frozenset({tuple, list})
_TUPLE_ONLY = frozenset({tuple})
# High byte of a little-endian float16 whose exponent bits are all ones (inf/NaN).
_NONFINITE_F16_HIGH = bytes(b for b in range(256) if b & 0x7C == 0x7C)


def _tname(value: Any) -> str:
    return type(value).__name__


def _as_tuple(value: Any, max_items: int) -> tuple[Any, ...]:
    if type(value) is tuple:
        items: tuple[Any, ...] = value
    elif type(value) is list:
        items = tuple(value)
    else:
        raise Invalid(f"expected a list, got {_tname(value)}")
    if len(items) > max_items:
        raise TooMany(f"{len(items)} items, over the limit of {max_items}")
    return items


# --- scalars ---------------------------------------------------------------------


def integer(lo: int = 0, hi: int = UINT63_MAX) -> Check:
    """An ``int`` (not ``bool``) in ``[lo, hi]``."""

    def check(value: Any) -> Any:
        if type(value) is not int:
            raise Invalid(f"expected an integer, got {_tname(value)}")
        if not lo <= value <= hi:
            raise Invalid(f"{value} is outside [{lo}, {hi}]")
        return value

    return check


def number(lo: float, hi: float) -> Check:
    """A finite ``float`` in ``[lo, hi]``; an ``int`` (not ``bool``) is converted."""

    def check(value: Any) -> Any:
        if type(value) is not float:
            if type(value) is not int:
                raise Invalid(f"expected a number, got {_tname(value)}")
            try:
                value = float(value)
            except OverflowError:
                raise Invalid("number too large") from None
        # NaN fails both comparisons; inf fails one of them.
        if not lo <= value <= hi:
            raise Invalid(f"{value!r} is not finite or outside [{lo:g}, {hi:g}]")
        return value

    return check


def boolean() -> Check:
    """A ``bool``."""

    def check(value: Any) -> Any:
        if type(value) is not bool:
            raise Invalid(f"expected a boolean, got {_tname(value)}")
        return value

    return check


def text(max_len: int, min_len: int = 0) -> Check:
    """A ``str`` of ``min_len`` to ``max_len`` characters."""

    def check(value: Any) -> Any:
        if type(value) is not str:
            raise Invalid(f"expected a string, got {_tname(value)}")
        n = len(value)
        if n > max_len:
            raise TooMany(f"string of {n} characters, over the limit of {max_len}")
        if n < min_len:
            raise Invalid(f"string shorter than {min_len} characters")
        return value

    return check


def _pattern_text(pattern: re.Pattern[str], what: str, max_len: int, min_len: int) -> Check:
    def check(value: Any) -> Any:
        if type(value) is not str:
            raise Invalid(f"expected {what}, got {_tname(value)}")
        n = len(value)
        if not min_len <= n <= max_len:
            raise Invalid(f"{what} must be {min_len} to {max_len} characters, got {n}")
        if pattern.fullmatch(value) is None:
            raise Invalid(f"{what} {value!r} has a character outside {pattern.pattern}")
        return value

    return check


def ident(max_len: int, min_len: int = 1) -> Check:
    """An identifier: ASCII letters, digits and ``. _ : -``."""
    return _pattern_text(_ID_CHARS, "an identifier", max_len, min_len)


def address(max_len: int) -> Check:
    """A transport address such as ``tcp://10.0.0.1:7001`` (no spaces)."""
    return _pattern_text(_ADDRESS, "an address", max_len, 1)


def printable(max_len: int) -> Check:
    """Printable ASCII without spaces, possibly empty."""
    return _pattern_text(_PRINTABLE, "printable ASCII", max_len, 0)


def blob(max_len: int, min_len: int = 0) -> Check:
    """``bytes`` of ``min_len`` to ``max_len`` bytes (``bytearray`` is converted)."""

    def check(value: Any) -> Any:
        if type(value) is not bytes:
            if not isinstance(value, bytearray | memoryview):
                raise Invalid(f"expected bytes, got {_tname(value)}")
            value = bytes(value)
        n = len(value)
        if n > max_len:
            raise TooMany(f"{n} bytes, over the limit of {max_len}")
        if n < min_len:
            raise Invalid(f"{n} bytes, under the minimum of {min_len}")
        return value

    return check


def embedding() -> Check:
    """384 little-endian float16 values (768 bytes), all finite."""

    def check(value: Any) -> Any:
        if type(value) is not bytes:
            if not isinstance(value, bytearray | memoryview):
                raise Invalid(f"expected float16 bytes, got {_tname(value)}")
            value = bytes(value)
        if len(value) != EMBEDDING_BYTES:
            raise Invalid(f"embedding must be {EMBEDDING_BYTES} bytes, got {len(value)}")
        high = value[1::2]
        if len(high.translate(None, _NONFINITE_F16_HIGH)) != len(high):
            raise Invalid("embedding has a NaN or infinite value")
        return value

    return check


def one_of(values: frozenset[str]) -> Check:
    """One of a fixed set of strings."""

    def check(value: Any) -> Any:
        if type(value) is not str or value not in values:
            raise Invalid(f"{value!r} is not one of {', '.join(sorted(values))}")
        return value

    return check


def optional(inner: Check) -> Check:
    """``None`` or a value that passes ``inner``."""

    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


# --- lists -----------------------------------------------------------------------


def each(inner: Check, max_items: int, *, unique: bool = False) -> Check:
    """A list of values, each checked by ``inner`` (a Python call per element)."""

    def check(value: Any) -> Any:
        items = _as_tuple(value, max_items)
        out = []
        for i, item in enumerate(items):
            try:
                out.append(inner(item))
            except Invalid as exc:
                raise type(exc)(f"[{i}]: {exc.reason}") from None
        result = tuple(out)
        if unique and len(set(result)) != len(result):
            raise Invalid("duplicate items")
        return result

    return check


def blob_list(max_items: int, max_len: int, min_len: int = 0) -> Check:
    """A short list of ``bytes`` values (a plain loop: fastest for a handful)."""

    def check(value: Any) -> Any:
        items = _as_tuple(value, max_items)
        for item in items:
            if type(item) is not bytes or not min_len <= len(item) <= max_len:
                break
        else:
            return items
        return _blobs_slow(items)

    _blobs_slow = blobs(max_len, min_len)  # normalizes bytearray, names the error
    return check


def list_of(column: ColumnCheck, max_items: int, *, unique: bool = False) -> Check:
    """A list checked as one column (C-speed), e.g. ``list_of(ids(64), 16)``."""

    def check(value: Any) -> Any:
        items = _as_tuple(value, max_items)
        if not items:
            return items
        items = column(items)
        if unique and len(set(items)) != len(items):
            raise Invalid("duplicate items")
        return items

    return check


def _columns(
    items: tuple[Any, ...], columns: tuple[ColumnCheck, ...]
) -> tuple[tuple[tuple[Any, ...], ...], bool]:
    """Check non-empty ``items`` as rows, column by column.

    Returns the checked columns and whether ``items`` can be kept as they are (all
    rows are tuples and no column needed normalizing).
    """
    arity = len(columns)
    kinds = set(map(type, items))
    if not kinds <= _ROW_TYPES:
        raise Invalid(f"expected rows of {arity} items")
    try:
        cols = tuple(zip(*items, strict=True))
    except ValueError:
        raise Invalid(f"expected rows of {arity} items") from None
    if len(cols) != arity:
        raise Invalid(f"expected rows of {arity} items")
    checked = tuple(map(operator.call, columns, cols))
    same = kinds == _TUPLE_ONLY and all(map(operator.is_, cols, checked))
    return checked, same


def rows(*columns: ColumnCheck, max_items: int, unique_first: bool = True) -> Check:
    """A list of fixed-arity rows, checked column by column.

    With ``unique_first`` the first column is a key and must not repeat.
    """

    def check(value: Any) -> Any:
        items = _as_tuple(value, max_items)
        if not items:
            return items
        checked, same = _columns(items, columns)
        if unique_first and len(set(checked[0])) != len(items):
            raise Invalid("duplicate keys")
        return items if same else tuple(zip(*checked, strict=True))

    return check


def keyed_lists(
    key: ColumnCheck,
    value: ColumnCheck,
    *,
    max_keys: int,
    max_per_key: int,
    ordered: bool = False,
) -> Check:
    """``((key, ((id, value), ...)), ...)``: unique keys, each with a list of content
    ids (unique within the list) and values, e.g. per-title neighbour lists.

    All inner rows are checked together, as one flat table, so the cost does not
    grow with a Python call per key. With ``ordered`` every inner id sorts after its
    key (unordered pairs written once, ``a < b``).
    """
    inner = (_content_ids, value)

    def check(raw: Any) -> Any:
        items = _as_tuple(raw, max_keys)
        if not items:
            return items
        (keys, groups), same = _columns(items, (key, _unchecked))
        if len(set(keys)) != len(keys):
            raise Invalid("duplicate keys")
        kinds = set(map(type, groups))
        if not kinds <= _ROW_TYPES:
            raise Invalid("expected a list for each key")
        sizes = tuple(map(len, groups))
        if max(sizes) > max_per_key:
            raise TooMany(f"a list has over {max_per_key} items")
        flat = tuple(chain.from_iterable(groups))
        if not flat:
            return (
                items
                if same and kinds == _TUPLE_ONLY
                else tuple(zip(keys, map(tuple, groups), strict=True))
            )
        (ids_, values), same_inner = _columns(flat, inner)
        owners = tuple(chain.from_iterable(map(repeat, keys, sizes)))
        if len(set(zip(owners, ids_, strict=True))) != len(flat):
            raise Invalid("duplicate ids within a list")
        if ordered and not all(map(operator.lt, owners, ids_)):
            raise Invalid("each id must sort after its key (a < b)")
        if same and same_inner and kinds == _TUPLE_ONLY:
            return items
        it = zip(ids_, values, strict=True)
        return tuple(zip(keys, (tuple(islice(it, n)) for n in sizes), strict=True))

    return check


def _unchecked(col: tuple[Any, ...]) -> tuple[Any, ...]:
    return col


# --- column checks ---------------------------------------------------------------


def ids(max_len: int) -> ColumnCheck:
    """A column of identifiers (see ``ident``), checked with one regex over all."""

    def check(col: tuple[Any, ...]) -> tuple[Any, ...]:
        if not set(map(type, col)) <= _STR_ONLY:
            raise Invalid("expected identifiers (strings)")
        lengths = set(map(len, col))
        if min(lengths) < 1 or max(lengths) > max_len:
            raise Invalid(f"identifiers must be 1 to {max_len} characters")
        if _ID_CHARS.fullmatch("".join(col)) is None:
            raise Invalid(f"an identifier has a character outside {_ID_CHARS.pattern}")
        return col

    return check


_content_ids = ids(CONTENT_ID_MAX_LEN)


def texts(max_len: int, min_len: int = 0) -> ColumnCheck:
    """A column of strings of ``min_len`` to ``max_len`` characters."""

    def check(col: tuple[Any, ...]) -> tuple[Any, ...]:
        if not set(map(type, col)) <= _STR_ONLY:
            raise Invalid("expected strings")
        lengths = set(map(len, col))
        if max(lengths) > max_len:
            raise TooMany(f"a string is over the limit of {max_len} characters")
        if min(lengths) < min_len:
            raise Invalid(f"a string is shorter than {min_len} characters")
        return col

    return check


def blobs(max_len: int, min_len: int = 0) -> ColumnCheck:
    """A column of ``bytes`` values of ``min_len`` to ``max_len`` bytes."""

    def check(col: tuple[Any, ...]) -> tuple[Any, ...]:
        if not set(map(type, col)) <= _BYTES_ONLY:
            if not all(isinstance(v, bytes | bytearray | memoryview) for v in col):
                raise Invalid("expected bytes")
            col = tuple(map(bytes, col))
        lengths = set(map(len, col))
        if max(lengths) > max_len:
            raise TooMany(f"an item is over the limit of {max_len} bytes")
        if min(lengths) < min_len:
            raise Invalid(f"an item is under the minimum of {min_len} bytes")
        return col

    return check


def numbers(lo: float, hi: float) -> ColumnCheck:
    """A column of finite floats in ``[lo, hi]`` (ints, not bools, are converted).

    The bounds keep any sum of a column finite, so one ``sum`` detects NaN and inf.
    """

    def check(col: tuple[Any, ...]) -> tuple[Any, ...]:
        kinds = set(map(type, col))
        if kinds != _FLOAT_ONLY:
            if not kinds <= _FLOAT_OR_INT:
                raise Invalid("expected numbers")
            try:
                col = tuple(map(float, col))
            except OverflowError:
                raise Invalid("number too large") from None
        if not math.isfinite(sum(col)):
            raise Invalid("a number is NaN or infinite")
        if min(col) < lo or max(col) > hi:
            raise Invalid(f"a number is outside [{lo:g}, {hi:g}]")
        return col

    return check


def integers(lo: int = 0, hi: int = UINT63_MAX) -> ColumnCheck:
    """A column of ints (not bools) in ``[lo, hi]``."""

    def check(col: tuple[Any, ...]) -> tuple[Any, ...]:
        if not set(map(type, col)) <= _INT_ONLY:
            raise Invalid("expected integers")
        if min(col) < lo or max(col) > hi:
            raise Invalid(f"an integer is outside [{lo}, {hi}]")
        return col

    return check


# --- JSON-like payloads ----------------------------------------------------------


def json_value(
    max_depth: int = JSON_MAX_DEPTH,
    max_nodes: int = JSON_MAX_NODES,
    max_str_len: int = JSON_MAX_STR_LEN,
) -> Check:
    """Nested ``None``/bool/int/float/str, lists (stored as tuples) and str-keyed dicts.

    Bounded in depth, total node count and string length; ints fit int64 or uint63,
    floats are finite. Dicts are copied, so the message never shares the caller's.
    """

    def check(value: Any) -> Any:
        budget = [max_nodes]
        return _json(value, max_depth, budget, max_str_len)

    return check


def _json(value: Any, depth: int, budget: list[int], max_str: int) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise TooMany("payload has too many values")
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        if not INT64_MIN <= value <= UINT63_MAX:
            raise Invalid("payload integer outside int64")
        return value
    if kind is float:
        if not math.isfinite(value):
            raise Invalid("payload number is NaN or infinite")
        return value
    if kind is str:
        if len(value) > max_str:
            raise TooMany("payload string too long")
        return value
    if depth <= 0:
        if kind in (tuple, list, dict):
            raise Invalid("payload nested too deeply")
        raise Invalid(f"payload value of type {kind.__name__} is not JSON-like")
    if kind is tuple or kind is list:
        return tuple([_json(v, depth - 1, budget, max_str) for v in value])
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise Invalid("payload keys must be strings")
            if len(k) > max_str:
                raise TooMany("payload key too long")
            out[k] = _json(v, depth - 1, budget, max_str)
        return out
    raise Invalid(f"payload value of type {kind.__name__} is not JSON-like")
