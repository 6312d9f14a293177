"""The TV's sync with its shard: reports due, schedule, push/pull cycle, accountant.

Plain code, tested without actors; ``omega.actors.sync.SyncAgent`` runs it.
"""
