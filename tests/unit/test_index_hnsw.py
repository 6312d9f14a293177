"""What only the HNSW index does: approximate recall, tombstones, rebuilds, revivals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omega.index import BruteForceIndex, HnswIndex, IndexFileError, IndexSettings, create_index
from omega.index.fileformat import checksum as _checksum
from omega.schema import SettingError, load


def clustered(rng: np.random.Generator, n: int, dim: int, centroids: np.ndarray,
              spread: float = 0.6) -> np.ndarray:
    """Unit vectors around unit centroids; ``spread`` is the noise's norm."""
    picks = centroids[rng.integers(0, len(centroids), n)]
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    v = picks + noise
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1]
                          for a, b in zip(found.tolist(), truth.tolist(), strict=True)]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """3,000 vectors of 384 dims around 30 centroids, and 200 queries from the same mix."""
    rng = np.random.default_rng(3)
    dim = 384
    c = rng.standard_normal((30, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return clustered(rng, 3000, dim, c), clustered(rng, 200, dim, c)


def test_recall_at_10_against_brute_force(data: tuple[np.ndarray, np.ndarray]) -> None:
    vecs, queries = data
    ids = np.arange(len(vecs), dtype=np.int64) * 7 + 3  # ids are not positions
    exact = BruteForceIndex(dim=384, capacity=len(vecs))
    exact.add(ids, vecs)
    _, truth = exact.search(queries, 10)
    hnsw = HnswIndex(dim=384, capacity=len(vecs))
    hnsw.add(ids, vecs)
    _, found = hnsw.search(queries, 10)
    assert recall_at(found, truth) >= 0.98
    # The bar is not trivially met: a starved search (ef = k = 1, read top-1) misses some.
    starved = HnswIndex(dim=384, capacity=len(vecs),
                        settings=IndexSettings(m=4, ef_construction=8, ef_search=1))
    starved.add(ids, vecs)
    _, top1 = starved.search(queries, 1)
    assert recall_at(top1, truth[:, :1]) < 0.98


def test_recall_holds_with_tombstones_below_the_rebuild_bar(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    vecs, queries = data
    hnsw = HnswIndex(dim=384, capacity=len(vecs), settings=IndexSettings(rebuild_fraction=0.5))
    hnsw.add(np.arange(len(vecs)), vecs)
    gone = np.arange(0, len(vecs), 3)  # a third of the entries: under half of the live ones
    hnsw.remove(gone)
    assert hnsw.tombstones == gone.size and hnsw.rebuilds == 0
    exact = BruteForceIndex(dim=384, capacity=len(vecs))
    exact.add(np.arange(len(vecs)), vecs)
    exact.remove(gone)
    _, truth = exact.search(queries, 10)
    _, found = hnsw.search(queries, 10)
    assert not np.isin(found, gone).any()
    assert recall_at(found, truth) >= 0.98


def test_rebuild_when_tombstones_pass_the_fraction() -> None:
    rng = np.random.default_rng(5)
    v = rng.standard_normal((100, 32)).astype(np.float32)
    hnsw = HnswIndex(dim=32, capacity=100, settings=IndexSettings(rebuild_fraction=0.25))
    hnsw.add(np.arange(100), v)
    hnsw.remove(np.arange(20))  # 20 dead <= 0.25 * 80 live
    assert (hnsw.tombstones, hnsw.rebuilds) == (20, 0)
    hnsw.remove([20])  # 21 > 0.25 * 79
    assert (hnsw.tombstones, hnsw.rebuilds) == (0, 1)
    assert len(hnsw) == 79
    scores, ids = hnsw.search(v[50:60], 1)
    assert ids[:, 0].tolist() == list(range(50, 60))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    # New entries after a rebuild are searchable, and old ids can come back.
    hnsw.add([5, 1000], v[[5, 6]] * -1)
    _, ids = hnsw.search(-v[5], 1)
    assert ids[0, 0] in (5, 1000)


def test_remove_then_add_of_the_same_vector_revives_the_node() -> None:
    rng = np.random.default_rng(6)
    v = rng.standard_normal((50, 32)).astype(np.float32)
    hnsw = HnswIndex(dim=32, capacity=50)
    hnsw.add(np.arange(50), v, np.linspace(0, 1, 50))
    graph_nodes = hnsw._index.ntotal
    for _ in range(100):  # a value update as the brain did it before set_values
        hnsw.remove([7])
        hnsw.add([7], v[7][None, :], [0.9])
    assert hnsw.tombstones == 0 and hnsw._index.ntotal == graph_nodes
    assert hnsw.get_values([7]).tolist() == [0.9]
    # A different vector under the same id does grow the graph (and tombstones the old).
    hnsw.add([7], v[8][None, :])
    assert hnsw._index.ntotal == graph_nodes + 1 and hnsw.tombstones == 1


def test_eviction_tombstones_and_searches_stay_clean() -> None:
    rng = np.random.default_rng(8)
    hnsw = HnswIndex(dim=16, capacity=50, settings=IndexSettings(rebuild_fraction=1.0))
    evicted: list[int] = []
    for step in range(20):
        vals = rng.random(10)
        evicted += hnsw.add(np.arange(step * 10, step * 10 + 10), rng.standard_normal((10, 16)),
                            vals).tolist()
        assert len(hnsw) <= 50
    assert len(evicted) == 150 and len(set(evicted)) == 150
    _, ids = hnsw.search(rng.standard_normal((20, 16)), 50)
    assert not np.isin(ids, evicted).any()
    assert set(ids[ids >= 0].tolist()) <= set(hnsw.ids().tolist())


def test_tombstones_survive_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    v = rng.standard_normal((60, 16)).astype(np.float32)
    hnsw = HnswIndex(dim=16, capacity=60, settings=IndexSettings(ef_search=40,
                                                                 rebuild_fraction=1.0))
    hnsw.add(np.arange(60), v)
    hnsw.remove(np.arange(0, 60, 2))
    hnsw.save(tmp_path / "h")
    loaded = HnswIndex.load(tmp_path / "h")
    assert loaded.tombstones == 30 and loaded.settings.ef_search == 40
    _, ids = loaded.search(v, 30)
    assert not np.isin(ids, np.arange(0, 60, 2)).any()
    # Settings given at load win over the saved ones and may trigger the rebuild now.
    again = HnswIndex.load(tmp_path / "h", IndexSettings(rebuild_fraction=0.5))
    assert again.tombstones == 0 and again.rebuilds == 1
    assert again.ids().tolist() == list(range(1, 60, 2))


def test_load_refuses_a_foreign_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    hnsw = HnswIndex(dim=16, capacity=10)
    hnsw.add(np.arange(4), rng.standard_normal((4, 16)))
    path = tmp_path / "h"
    hnsw.save(path)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    other = HnswIndex(dim=8, capacity=10)
    other.add(np.arange(4), rng.standard_normal((4, 8)))
    arrays["x_graph"] = other._payload(other.ids())["graph"]
    arrays["checksum"] = _checksum(arrays)
    with open(tmp_path / "foreign", "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(IndexFileError, match="dimensions"):
        HnswIndex.load(tmp_path / "foreign")
    arrays["x_graph"] = arrays["x_graph"][:50]
    arrays["checksum"] = _checksum(arrays)
    with open(tmp_path / "cut", "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(IndexFileError, match="faiss"):
        HnswIndex.load(tmp_path / "cut")


def test_settings_are_validated_by_the_schema() -> None:
    s = load(IndexSettings, {"m": 32, "ef_search": 100}, "brain.index")
    assert (s.m, s.ef_search, s.ef_construction) == (32, 100, 40)
    for table, key in (({"m": 1}, "brain.index.m"), ({"ef_search": 0}, "brain.index.ef_search"),
                       ({"rebuild_fraction": 0.0}, "brain.index.rebuild_fraction"),
                       ({"efsearch": 5}, "brain.index.efsearch")):
        with pytest.raises(SettingError) as info:
            load(IndexSettings, table, "brain.index")
        assert info.value.key == key


def test_create_index_by_kind() -> None:
    assert isinstance(create_index("hnsw", 8, 5), HnswIndex)
    assert isinstance(create_index("brute", 8, 5), BruteForceIndex)
    with pytest.raises(ValueError, match="kind"):
        create_index("annoy", 8, 5)


# -- float16 storage ----------------------------------------------------------------------

HALF = IndexSettings(storage="float16")


def test_float16_storage_keeps_recall_and_near_exact_scores(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    vecs, queries = data
    ids = np.arange(len(vecs), dtype=np.int64)
    exact = BruteForceIndex(dim=384, capacity=len(vecs))
    exact.add(ids, vecs)
    truth_scores, truth = exact.search(queries, 10)
    half = HnswIndex(dim=384, capacity=len(vecs), settings=HALF)
    half.add(ids, vecs)
    scores, found = half.search(queries, 10)
    assert recall_at(found, truth) >= 0.98
    np.testing.assert_allclose(scores[:, 0], truth_scores[:, 0], atol=2e-3)
    # Half the bytes of the float32 graph's vectors, and they read back within fp16.
    assert half._storage().dtype == np.float16 and half._storage().nbytes == vecs.nbytes // 2
    back = half.get_vectors(ids[:5])
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, vecs[:5], atol=1e-3)


def test_float16_revival_rebuild_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    v = rng.standard_normal((80, 32)).astype(np.float32)
    hnsw = HnswIndex(dim=32, capacity=80, settings=HALF)
    hnsw.add(np.arange(80), v)
    nodes = hnsw._index.ntotal
    hnsw.remove([5])
    hnsw.add([5], v[5][None, :])  # same vector: the node is revived, not re-added
    assert hnsw.tombstones == 0 and hnsw._index.ntotal == nodes
    hnsw.remove(np.arange(40, 70))  # past the rebuild fraction
    assert hnsw.rebuilds == 1 and hnsw.tombstones == 0 and len(hnsw) == 50
    _, self_ids = hnsw.search(v[:40], 1)
    assert self_ids[:, 0].tolist() == list(range(40))
    hnsw.save(tmp_path / "h")
    loaded = HnswIndex.load(tmp_path / "h")
    assert loaded.settings.storage == "float16"
    assert loaded.search(v[:40], 3)[1].tolist() == hnsw.search(v[:40], 3)[1].tolist()
    # A graph of the other storage is refused (the brain then rebuilds its index).
    with pytest.raises(IndexFileError, match="not IndexHNSWFlat"):
        HnswIndex.load(tmp_path / "h", IndexSettings(storage="float32"))


def test_files_from_before_the_storage_setting_load_as_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    hnsw = HnswIndex(dim=16, capacity=10)
    hnsw.add(np.arange(4), rng.standard_normal((4, 16)))
    hnsw.save(tmp_path / "h")
    with np.load(tmp_path / "h") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["x_params"] = arrays["x_params"][:5]  # the old five numbers
    arrays["checksum"] = _checksum(arrays)
    with open(tmp_path / "old", "wb") as fh:
        np.savez(fh, **arrays)
    old = HnswIndex.load(tmp_path / "old")
    assert old.settings.storage == "float32" and len(old) == 4
    with pytest.raises(SettingError) as info:
        load(IndexSettings, {"storage": "int8"}, "brain.index")
    assert info.value.key == "brain.index.storage"
