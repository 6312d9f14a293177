"""Settings of the TV brain: the ``[brain]`` table of ``config/tv.toml``.

Loaded with ``omega.schema.load(BrainSettings, table, "brain")``. The defaults
are the ones tuned on the MovieLens validation split (docs/brain.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omega.brain.embedder import EmbedderSettings
from omega.index.settings import IndexSettings
from omega.schema import require

__all__ = ["BrainSettings", "Durability", "RecommenderSettings"]

#: How an ``observe`` reaches the disk before it returns (see docs/brain.md):
#: ``sync`` fsyncs data and meta pages on every commit (survives power loss);
#: ``metasync`` skips the meta-page fsync (a power cut may roll back the last
#: commits, a process kill loses nothing); ``nosync`` leaves flushing to the OS
#: (for simulations and benchmarks of many TVs in one process only).
Durability = Literal["sync", "metasync", "nosync"]


@dataclass(frozen=True)
class RecommenderSettings:
    """Weights of the blended score and the shape of the result list.

    score = crowd·CF + content·similar + popularity·pop + trend·trend
            + context·genre-affinity-in-daypart  (each signal scaled to [0, 1];
            ``popularity_with_crowd`` replaces ``popularity`` once crowd lists exist)

    ``similar`` is the power mean, exponent ``similar_sharpness``, of the title's
    cosine to each of the last ``similar_history`` views, the j-th most recent
    weighted ``similar_decay**j`` (less when abandoned): close to its best match.
    """

    # Tuned on the MovieLens validation split (docs/brain.md, "Tuning").
    crowd: float = 1.0
    content: float = 1.5
    #: Popularity (the crowd's, else the catalog's ``metadata["popularity"]``) while
    #: the TV has no crowd neighbour lists: 0.4 was best on validation (content +
    #: catalog popularity, HR@10 0.071 vs 0.051 at 0.05 and 0.046 without).
    popularity: float = 0.4
    #: ... and once it has them: the lists carry the signal, popularity cost hits
    #: on validation (0.25: -0.008 HR@10); kept small to order an empty history.
    popularity_with_crowd: float = 0.05
    #: Not measurable on MovieLens (no regions); a modest prior.
    trend: float = 0.1
    #: Genre affinity in the daypart. 0: MovieLens rating times are not viewing
    #: times, and on validation every weight > 0 lost hits. Raise it with TV data.
    context: float = 0.0
    #: How far the long-term patterns pull the content query (0 = off).
    pattern: float = 0.0
    #: Patterns read from the pattern index per recommendation.
    pattern_neighbours: int = 16
    #: Titles taken from the catalog HNSW index by content similarity.
    content_candidates: int = 300
    #: Most popular / trending titles always considered as candidates.
    popular_candidates: int = 100
    #: Diversity: at most this many results share a first genre (0 = no cap; 4 cost
    #: 0.007 HR@10 on validation).
    genre_cap: int = 0
    #: Maximal marginal relevance trade-off (1.0 = relevance only). On validation
    #: predicted two steps ahead (own history only) 0.9 cost 0.003 HR@10 and 0.8 0.004;
    #: with crowd lists 0.8 / 0.9 / 1.0 are within 0.003 (docs/brain.md §4).
    mmr_lambda: float = 0.9
    #: Recent views the content signal compares each title with, one by one.
    similar_history: int = 20
    #: ... the j-th most recent of them weighs similar_decay**j (0.8-0.9 within 0.003
    #: HR@10 on validation, 0.7 and 0.95 lost 0.002-0.006).
    similar_decay: float = 0.85
    #: Power-mean exponent over those similarities: 1 = weighted mean (one taste vector),
    #: large = the best single match. 16 on validation two steps ahead: HR@10 0.032 vs
    #: 0.026 for the cosine to a decayed mean; first 4 views -> 5th: 0.059 vs 0.044.
    similar_sharpness: float = 16.0
    #: Titles released after the year of the recommend timestamp (never earlier than
    #: the newest title watched) rank after every released one: a TV's catalog can
    #: list what it cannot show yet.
    unreleased_last: bool = True
    max_k: int = 200
    #: Catalogs up to this size are scored in full (exact, ~1 ms at 10,000 titles);
    #: larger ones take candidates from the catalog HNSW index (built on first need).
    full_scan_items: int = 20_000

    def __post_init__(self) -> None:
        for name in ("crowd", "content", "popularity", "popularity_with_crowd", "trend",
                     "context", "pattern"):
            value = getattr(self, name)
            require(0.0 <= value <= 100.0, name, "must be between 0 and 100")
        require(1 <= self.pattern_neighbours <= 1000, "pattern_neighbours", "must be 1-1000")
        require(1 <= self.content_candidates <= 100_000, "content_candidates", "must be 1-100000")
        require(0 <= self.popular_candidates <= 100_000, "popular_candidates", "must be 0-100000")
        require(0 <= self.genre_cap <= 1000, "genre_cap", "must be 0 (off) to 1000")
        require(0.0 <= self.mmr_lambda <= 1.0, "mmr_lambda", "must be between 0 and 1")
        require(1 <= self.similar_history <= 1000, "similar_history", "must be 1-1000")
        require(0.0 < self.similar_decay <= 1.0, "similar_decay", "must be in (0, 1]")
        require(1.0 <= self.similar_sharpness <= 64.0, "similar_sharpness", "must be 1-64")
        require(1 <= self.max_k <= 10_000, "max_k", "must be 1-10000")
        require(0 <= self.full_scan_items <= 10_000_000, "full_scan_items", "must be 0-10000000")


@dataclass(frozen=True)
class BrainSettings:
    """Everything the brain needs besides its data directory."""

    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    #: The HNSW parameters of both indexes (catalog and patterns). A better graph
    #: (efConstruction 200, built once, 2.4 s for 10,000 titles) reaches recall@10
    #: 0.986 on profile-like queries over MovieLens titles at efSearch 64, where
    #: efConstruction 40 needed efSearch 128 for 0.982 — about 1.5× the search time.
    #: float16 vectors in the graph: half the memory (7.5 MB less per 10,000) and
    #: ~20 % faster searches at the same recall (docs/embedder-and-index.md).
    index: IndexSettings = field(default_factory=lambda: IndexSettings(
        ef_construction=200, ef_search=64, storage="float16"))
    recommender: RecommenderSettings = field(default_factory=RecommenderSettings)
    #: The j-th most recent view weighs recency_decay**j against the crowd's lists.
    #: Windowed co-view lists want a short memory: on MovieLens validation (610 users,
    #: released lists) NDCG@10 0.087 at 0.6 against 0.078 at 0.9 (omega/sim/fedbench.py).
    recency_decay: float = 0.6
    #: ... and content_decay**j in the profile vector (the content query). Content
    #: wants a short memory: 0.5 beats 0.9 on MovieLens validation (docs/brain.md).
    content_decay: float = 0.5
    #: A view with watch_fraction >= this is a success.
    success_threshold: float = 0.8
    #: Weight of an abandoned view relative to a successful one.
    abandoned_weight: float = 0.5
    #: Recent views kept for scoring (older ones weigh < 0.9**100 anyway).
    history_length: int = 100
    #: The skill library holds at most this many patterns; lowest value evicted first.
    pattern_capacity: int = 10_000
    #: A view updates an existing pattern of the same title this close to its key.
    pattern_merge_threshold: float = 0.9
    #: Largest catalog the catalog index is sized for.
    max_catalog_items: int = 200_000
    #: An event older than the last observed one by more than this is refused.
    time_tolerance_s: float = 300.0
    #: The TV's offset from UTC, for the daypart of a timestamp.
    utc_offset_s: int = 0
    #: Reserved LMDB map (virtual address space; the file grows as written).
    map_size: int = 4 << 30
    durability: Durability = "sync"
    #: Where the embedder keeps its re-quantized model; unset: <data_dir>/cache.
    model_cache_dir: Path | None = None
    #: Catalogs larger than this show a progress bar while they are embedded.
    progress_min_items: int = 2000
    embed_batch_size: int = 64

    def __post_init__(self) -> None:
        require(0.0 < self.recency_decay <= 1.0, "recency_decay", "must be in (0, 1]")
        require(0.0 < self.content_decay <= 1.0, "content_decay", "must be in (0, 1]")
        require(0.0 < self.success_threshold <= 1.0, "success_threshold", "must be in (0, 1]")
        require(0.0 <= self.abandoned_weight <= 1.0, "abandoned_weight", "must be in [0, 1]")
        require(1 <= self.history_length <= 10_000, "history_length", "must be 1-10000")
        require(1 <= self.pattern_capacity <= 10_000_000, "pattern_capacity",
                "must be 1-10000000")
        require(0.0 < self.pattern_merge_threshold <= 1.0, "pattern_merge_threshold",
                "must be in (0, 1]")
        require(1 <= self.max_catalog_items <= 100_000_000, "max_catalog_items",
                "must be 1-100000000")
        require(0.0 <= self.time_tolerance_s <= 86_400 * 365, "time_tolerance_s",
                "must be between 0 and one year")
        require(-86_400 < self.utc_offset_s < 86_400, "utc_offset_s", "must be within a day")
        require(1 << 20 <= self.map_size <= 1 << 40, "map_size", "must be 1 MiB to 1 TiB")
        require(self.progress_min_items >= 0, "progress_min_items", "must be >= 0")
        require(1 <= self.embed_batch_size <= 4096, "embed_batch_size", "must be 1-4096")
