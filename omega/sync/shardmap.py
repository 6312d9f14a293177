"""Which shard group a TV talks to: rendezvous (highest random weight) hashing.

Each group of the TV's region scores ``H(group name, device id)``; the TV takes the
highest. Adding a group to a region of n moves only the TVs it now wins, about 1/(n+1)
of them; a group that disappears moves only its own TVs, each to its next-highest
group (``pick`` without it). No table to keep in step between TVs: the choice is a
pure function of the device id and the group names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from omega.errors import ConfigError
from omega.sync.settings import ShardGroup

__all__ = ["NoShardGroup", "pick", "ranked", "score"]


class NoShardGroup(ConfigError):
    """No shard group serves the TV's region (or every one of them was excluded)."""

    def __init__(self, region: str) -> None:
        super().__init__("[sync]", "groups",
                         f"no shard group serves region {region!r}: add one with "
                         "`omega-node tv provision --group ...` or [[sync.groups]]")


def score(group_name: str, device_id: str) -> int:
    """The group's rendezvous weight for a device (64-bit BLAKE2b of both names)."""
    h = hashlib.blake2b(digest_size=8, person=b"omega-hrw")
    h.update(group_name.encode())
    h.update(b"\x00")
    h.update(device_id.encode())
    return int.from_bytes(h.digest(), "big")


def ranked(groups: Iterable[ShardGroup], device_id: str, region: str) -> list[ShardGroup]:
    """The region's groups, best first for this device."""
    mine = [g for g in groups if g.region == region]
    return sorted(mine, key=lambda g: (score(g.name, device_id), g.name), reverse=True)


def pick(groups: Sequence[ShardGroup], device_id: str, region: str,
         exclude: Iterable[str] = ()) -> ShardGroup:
    """The device's group in its region, skipping groups named in ``exclude``."""
    gone = set(exclude)
    for g in ranked(groups, device_id, region):
        if g.name not in gone:
            return g
    raise NoShardGroup(region)
