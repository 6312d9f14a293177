"""Batches between servers: content-addressed ids and deterministic parts.

A batch's id is a hash of its reports, and its parts are cut from the reports in
byte order, so the same reports always make the same ``(batch_id, part)``: on a
retry, after a crash, on another replica. Receivers store each part once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from omega.errors import ProtocolError
from omega.protocol.limits import MAX_FRAME_BYTES

#: Reports per part: well under the protocol's 2048 items and 512 KiB per frame.
PART_REPORTS = 1500


class UnexpectedReply(ProtocolError):
    """The peer answered with a message of the wrong type."""

    code = "bad_request"


def batch_id(reports: Sequence[bytes]) -> str:
    """A content-addressed id: a hash of the reports in byte order (arrival order,
    shuffles and retries do not change it)."""
    h = hashlib.blake2b(digest_size=16)
    for r in sorted(reports):
        h.update(len(r).to_bytes(4, "big"))
        h.update(r)
    return h.hexdigest()


def split_parts(reports: Sequence[bytes], max_reports: int = PART_REPORTS,
                max_bytes: int = MAX_FRAME_BYTES // 2) -> list[tuple[bytes, ...]]:
    """Deterministic parts of one batch: reports in byte order (unrelated to arrival:
    sealed boxes look random), cut by count and bytes. The same reports always give
    the same parts, so ``(batch_id, part)`` names the same content on every retry."""
    parts: list[tuple[bytes, ...]] = []
    cur: list[bytes] = []
    size = 0
    for r in sorted(reports):
        if cur and (len(cur) >= max_reports or size + len(r) + 8 > max_bytes):
            parts.append(tuple(cur))
            cur, size = [], 0
        cur.append(r)
        size += len(r) + 8
    if cur:
        parts.append(tuple(cur))
    return parts


