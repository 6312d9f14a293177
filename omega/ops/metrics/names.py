"""Metric names: the seed's eight, then Omega's own (docs/operations.md lists them all).

Counters are exposed by prometheus-client with a ``_total`` sample suffix
(``constellation_patterns_received_total``); the family name is the seed's.
"""

# -- the seed's names -------------------------------------------------------------------
BRAIN_PATTERNS = "omega_brain_patterns_stored"
BRAIN_INFERENCE_MS = "omega_brain_inference_ms"
BRAIN_RECOMMENDATIONS = "omega_brain_recommendations_served"
BRAIN_MEMORY_MB = "omega_brain_memory_mb"
DEVICES_ACTIVE = "constellation_devices_active"
SYNC_LATENCY_MS = "constellation_sync_latency_ms"
PATTERNS_RECEIVED = "constellation_patterns_received"
SHARD_HEALTH = "constellation_shard_health"

SEED_NAMES = (BRAIN_PATTERNS, BRAIN_INFERENCE_MS, BRAIN_RECOMMENDATIONS, BRAIN_MEMORY_MB,
              DEVICES_ACTIVE, SYNC_LATENCY_MS, PATTERNS_RECEIVED, SHARD_HEALTH)

# -- Omega's own ------------------------------------------------------------------------
NODE_INFO = "omega_node_info"
NODE_UPTIME = "omega_node_uptime_seconds"
SUPERVISOR_RESTARTS = "omega_supervisor_restarts"
RAFT_TERM = "omega_raft_term"
RAFT_COMMIT_INDEX = "omega_raft_commit_index"
RAFT_APPLIED_INDEX = "omega_raft_applied_index"
RAFT_IS_LEADER = "omega_raft_is_leader"
RAFT_LEADER_CHANGES = "omega_raft_leader_changes"
GROUP_COMMIT_BATCHES = "omega_shard_group_commit_batches"
GROUP_COMMIT_ITEMS = "omega_shard_group_commit_items"
GROUP_COMMIT_LARGEST = "omega_shard_group_commit_largest_batch"
REQUESTS = "omega_shard_requests"
REJECTED = "omega_shard_rejected_requests"
DEVICES_TOTAL = "omega_shard_devices"
REPORTS_STORED = "omega_shard_reports_stored"
STORAGE_BYTES = "omega_shard_storage_bytes"
FEDERATION_ROUNDS = "omega_federation_rounds"
FEDERATION_EPSILON = "omega_federation_epsilon_spent"
FEDERATION_REPORTS = "omega_federation_reports_received"

#: Milliseconds: a pull is ~0.1-1 ms, a push waits for a Raft commit (1-50 ms).
LATENCY_BUCKETS_MS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                      1000.0, 2500.0)
#: Recommend on the TV: target well under 15 ms.
INFERENCE_BUCKETS_MS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 25.0, 50.0, 100.0, 250.0)
