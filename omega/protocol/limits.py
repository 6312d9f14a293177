"""Protocol constants: the version and every size limit, in one place.

The frame limits bound what a hostile peer can make a decoder allocate. msgpack
pre-allocates each array from its header (up to ~10,000 slots) and nests up to 1,024
deep, so ``MAX_ITEMS`` (the longest array any message may hold) and
``MAX_FRAME_BYTES`` are chosen together: the worst frame of any type costs well under
50 MB to reject (measured in tests/unit/test_protocol_limits.py; see docs/protocol.md).
"""

from __future__ import annotations

#: Carried as the second element of every frame; a mismatch is rejected (code ``version``).
PROTOCOL_VERSION = 1

#: No frame of any type is longer than this (nng ``recv_max_size`` for mixed endpoints).
MAX_FRAME_BYTES = 512 * 1024
#: Longest array any message may contain (msgpack ``max_array_len``). Bigger server
#: messages are split into parts (``part``/``parts``).
MAX_ITEMS = 2048

# Per-type frame limits (bytes on the wire, tag/version/array header included).
PUSH_MAX_BYTES = 1024
PULL_MAX_BYTES = 2048
PULL_RESP_MAX_BYTES = 64 * 1024
#: What a normal incremental pull is expected to fit (documentation, not enforced).
PULL_RESP_TYPICAL_BYTES = 5 * 1024
HEARTBEAT_MAX_BYTES = 64
SMALL_MAX_BYTES = 128  # acks and field-less requests
HEALTH_REPLY_MAX_BYTES = 512
ERROR_REPLY_MAX_BYTES = 2048
CTL_REQUEST_MAX_BYTES = 1024
#: Messages with a JSON-like payload (maps allowed) are capped lower, because an
#: empty map costs ~80 bytes of memory per byte of frame.
JSON_MESSAGE_MAX_BYTES = 128 * 1024
TV_SMALL_MAX_BYTES = 512
#: 100 recommendations with their reasons and titles, all at their longest (UTF-8).
TV_REPLY_MAX_BYTES = 192 * 1024
SERVER_MESSAGE_MAX_BYTES = MAX_FRAME_BYTES

# Identifiers: ASCII letters, digits and ``. _ : -``.
CONTENT_ID_MAX_LEN = 64
#: 31 characters fit a msgpack fixstr, which keeps a Heartbeat within 64 bytes.
DEVICE_ID_MAX_LEN = 31
LABEL_MAX_LEN = 32  # region, role, status, software version, shard id
ADDRESS_MAX_LEN = 256

# The hub's report keys (X25519), announced in GlobalUpdate and PullResp.
HUB_KEY_ID_MAX = 2**32 - 1
HUB_PUBLIC_KEY_BYTES = 32
#: The hub's Ed25519 signature of a key announcement (omega.federation.keysign).
HUB_KEY_SIG_BYTES = 64

# Signatures.
MAC_BYTES = 32  # HMAC-SHA256, Push and Pull
HEARTBEAT_MAC_BYTES = 16  # truncated HMAC-SHA256 (128 bits), Heartbeat only
MIN_KEY_BYTES = 16

# Embeddings: float16, little-endian, exactly this many dimensions.
EMBEDDING_DIM = 384
EMBEDDING_BYTES = 2 * EMBEDDING_DIM

# Field limits.
MAX_REPORTS = 8  # sealed reports per push
MAX_REPORT_BYTES = 1000  # one opaque sealed report
MAX_WANT = 16  # content ids asked for per pull
MAX_NEIGHBOURS = 100  # per title
MAX_NEW_CONTENT_PER_PULL = 64
MAX_RECOMMENDATIONS = 100
MAX_GENRES = 16
TITLE_MAX_LEN = 256
DESCRIPTION_MAX_LEN = 4096
GENRE_MAX_LEN = 64
REASON_MAX_LEN = 128
MESSAGE_MAX_LEN = 256  # ErrorReply.message
TARGET_MAX_LEN = 256  # CtlRequest.target
MAX_PARTS = 65535
#: Any float field is finite and within +/- this bound.
FLOAT_BOUND = 1e15
UINT63_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# JSON-like payloads (CtlReply, TvOk).
JSON_MAX_DEPTH = 16
JSON_MAX_NODES = 65536
JSON_MAX_STR_LEN = 65536
