"""Federation: what TVs contribute (reports) and what the constellation makes of it.

Plain modules, no actors and no sockets (DESIGN.md §7): ``report`` is the format
both halves of the crowd loop share — the TV seals, only the hub opens.
``sums`` (exact, mergeable counts of opened reports), ``trends`` (per-region
windows), ``release`` (noise, thresholds, neighbour lists) and ``accountant``
(ε over releases, with ``dp-accounting``) are the hub's maths.
"""
