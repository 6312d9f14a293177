"""One hash over a store's databases, the same for LMDB and the in-memory twin."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

_LEN = struct.Struct(">I")


def state_hash(databases: Iterable[tuple[str, Iterable[tuple[bytes, bytes]]]]) -> str:
    """SHA-256 (hex) over ``(name, items in key order)`` of each database, names sorted.

    Every field is length-prefixed, so no two different states hash alike by
    concatenation. Callers pass databases in sorted name order.
    """
    h = hashlib.sha256()
    for name, items in databases:
        raw = name.encode()
        h.update(b"D" + _LEN.pack(len(raw)) + raw)
        for key, value in items:
            h.update(_LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value)
    return h.hexdigest()
