"""Test helpers of the shard suite (waiting is shared with the node tests)."""

from tests.nodeproc import wait_for

__all__ = ["wait_for"]
