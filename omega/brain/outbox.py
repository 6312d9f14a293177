"""What the TV's sync agent keeps in the brain's LMDB: its state and the outbound queue.

Checked here (a bad key, value or payload raises ``BadInput`` and changes nothing);
stored by ``omega.brain.memory`` in the same environment as the viewing history,
so a queued report and the view that produced it are equally durable.
"""

from __future__ import annotations

from omega.brain.errors import BadInput
from omega.brain.memory import Memory

__all__ = ["MAX_PAYLOAD_BYTES", "SyncStore"]

#: Largest sync value and outbound payload.
MAX_PAYLOAD_BYTES = 1 << 20


def _key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise BadInput("a sync key is a string of 1-200 characters")
    return key


class SyncStore:
    """Sync state (key → bytes) and a durable FIFO of payloads with sequence numbers."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def get(self, key: str) -> bytes | None:
        return self._memory.get_sync(_key(key))

    def put(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) > MAX_PAYLOAD_BYTES:
            raise BadInput("a sync value is at most 1 MiB of bytes")
        self._memory.put_sync(_key(key), value)

    def enqueue(self, payload: bytes) -> int:
        if not isinstance(payload, bytes) or not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
            raise BadInput("an outbound payload is 1 byte to 1 MiB of bytes")
        return self._memory.enqueue(payload)

    def peek(self, n: int) -> list[tuple[int, bytes]]:
        return self._memory.peek(max(0, int(n)))

    def ack(self, up_to: int) -> int:
        return self._memory.ack(int(up_to))
