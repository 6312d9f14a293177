"""Federation: what TVs contribute (reports) and what the constellation makes of it.

Plain modules, no actors and no sockets (DESIGN.md §7): ``report`` is the format
both halves of the crowd loop share — the TV seals, only the hub opens.
"""
