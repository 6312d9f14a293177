"""One suite for every ``VectorIndex``: faiss HNSW and the numpy brute force.

Small indexes (tens to hundreds of entries, 16-32 dims), where HNSW with its
default ef_search visits every node and must agree with exact search.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from omega.index import (
    BruteForceIndex,
    DimensionMismatch,
    HnswIndex,
    IndexFileError,
    IndexSettings,
    InvalidArgument,
    InvalidVector,
    VectorIndex,
    VectorIndexError,
)
from omega.index.core import IndexCore

DIM = 16
IMPLS = [HnswIndex, BruteForceIndex]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def snapshot(index: IndexCore, probe: np.ndarray) -> tuple[list[int], list[float], list[int]]:
    ids = index.ids()
    _, found = index.search(probe, 5)
    return ids.tolist(), index.get_values(ids).tolist(), found.ravel().tolist()


@pytest.fixture(params=IMPLS, ids=lambda c: c.__name__)
def impl(request: pytest.FixtureRequest) -> type[IndexCore]:
    cls: type[IndexCore] = request.param
    return cls


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_satisfies_the_protocol(impl: type[IndexCore]) -> None:
    index = impl(dim=DIM, capacity=10)
    assert isinstance(index, VectorIndex)
    assert (index.dim, index.capacity, len(index)) == (DIM, 10, 0)


def test_empty_index_pads_every_slot(impl: type[IndexCore], rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=10)
    scores, ids = index.search(unit(rng, 3), 4)
    assert scores.shape == ids.shape == (3, 4)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert (ids == -1).all() and np.isneginf(scores).all()
    assert index.ids().dtype == np.int64 and index.ids().size == 0


def test_each_vector_finds_itself_first(impl: type[IndexCore], rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=500)
    vecs = unit(rng, 200)
    ids = np.arange(1000, 1200, dtype=np.int64)
    assert index.add(ids, vecs).size == 0
    assert len(index) == 200
    scores, found = index.search(vecs, 3)
    assert (found[:, 0] == ids).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores must come best first"


def test_search_matches_exact_inner_product(impl: type[IndexCore],
                                            rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=500)
    vecs = unit(rng, 150)
    index.add(np.arange(150), vecs)
    queries = unit(rng, 20)
    scores, found = index.search(queries, 10)
    exact = queries @ vecs.T
    truth = np.argsort(-exact, axis=1)[:, :10]
    assert (found == truth).all()
    np.testing.assert_allclose(scores, np.take_along_axis(exact, truth, axis=1), atol=1e-5)


def test_one_dimensional_query_gives_one_row(impl: type[IndexCore],
                                             rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=10)
    vecs = unit(rng, 3)
    index.add([1, 2, 3], vecs)
    _, ids = index.search(vecs[1], 2)
    assert ids.shape == (1, 2) and ids[0, 0] == 2


def test_k_beyond_size_is_padded(impl: type[IndexCore], rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=10)
    index.add([5, 6], unit(rng, 2))
    scores, ids = index.search(unit(rng, 1), 5)
    assert sorted(ids[0, :2].tolist()) == [5, 6]
    assert ids[0, 2:].tolist() == [-1, -1, -1]
    assert np.isfinite(scores[0, :2]).all() and np.isneginf(scores[0, 2:]).all()


def test_contains_and_ids(impl: type[IndexCore], rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=10)
    index.add(np.asarray([9, 3, 7], dtype=np.uint32), unit(rng, 3))
    assert index.ids().tolist() == [3, 7, 9]
    assert 3 in index and np.int64(7) in index
    assert 4 not in index and "3" not in index and True not in index


def test_vectors_are_normalized_not_rejected(impl: type[IndexCore],
                                             rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=10)
    v = unit(rng, 2)
    index.add([1, 2], np.vstack([3.0 * v[0], 0.5 * v[1]]).astype(np.float16))
    stored = index.get_vectors([1, 2])
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(stored, v, atol=2e-3)  # float16 input
    s1, i1 = index.search(v[0], 2)
    s2, i2 = index.search(10.0 * v[0], 2)
    assert i1.tolist() == i2.tolist()
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert abs(float(s1[0, 0]) - 1.0) < 2e-3


def test_adding_a_present_id_replaces_it(impl: type[IndexCore],
                                         rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=10)
    old, new = unit(rng, 2)
    index.add([1, 2], np.vstack([old, unit(rng, 1)[0]]), [0.2, 0.3])
    assert index.add([1], new[None, :], [0.9]).size == 0
    assert len(index) == 2
    assert index.get_values([1]).tolist() == [0.9]
    np.testing.assert_allclose(index.get_vectors([1])[0], new, atol=1e-6)
    _, ids = index.search(new, 1)
    assert ids[0, 0] == 1
    scores, ids = index.search(old, 2)
    hit = {int(i): float(s) for s, i in zip(scores[0], ids[0], strict=True)}
    assert hit.get(1, -1.0) < 0.999, "the old vector must be gone"


def test_remove(impl: type[IndexCore], rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=100)
    vecs = unit(rng, 50)
    index.add(np.arange(50), vecs)
    assert index.remove([3, 4, 4, 999]) == 2
    assert index.remove([]) == 0
    assert len(index) == 48 and 3 not in index and 4 not in index
    _, ids = index.search(vecs, 48)
    assert not np.isin(ids, [3, 4]).any()
    _, ids = index.search(vecs[5], 1)
    assert ids[0, 0] == 5


def test_eviction_lowest_value_first_ties_oldest(impl: type[IndexCore],
                                                 rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=5)
    index.add([1, 2, 3, 4, 5], unit(rng, 5), [0.5, 0.1, 0.9, 0.1, 0.7])
    # 2 and 4 tie at 0.1: 2 is older, so it goes first.
    assert index.add([6], unit(rng, 1), [0.6]).tolist() == [2]
    assert index.add([7], unit(rng, 1), [0.6]).tolist() == [4]
    # Ties between a stored entry (6, older) and the offered one (8): the stored goes.
    assert index.add([8], unit(rng, 1), [0.5]).tolist() == [1]
    assert index.ids().tolist() == [3, 5, 6, 7, 8]


def test_eviction_can_refuse_the_offered_entries(impl: type[IndexCore],
                                                 rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=3)
    index.add([1, 2, 3], unit(rng, 3), [0.5, 0.6, 0.7])
    # Offered: 10 (0.0) and 11 (0.55); two must go: 10 (lowest), then 1 (0.5).
    evicted = index.add([10, 11], unit(rng, 2), [0.0, 0.55])
    assert evicted.tolist() == [10, 1]
    assert evicted.dtype == np.int64
    assert index.ids().tolist() == [2, 3, 11]
    # An offer larger than the capacity keeps only the best.
    evicted = index.add([20, 21, 22, 23, 24], unit(rng, 5), [0.9, 0.1, 0.8, 0.95, 0.2])
    assert evicted.tolist() == [21, 24, 11, 2, 3]
    assert index.ids().tolist() == [20, 22, 23]


def test_replacing_makes_an_entry_the_newest(impl: type[IndexCore],
                                             rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=3)
    index.add([1, 2, 3], unit(rng, 3))  # values default to 0.0: oldest goes first
    index.add([1], unit(rng, 1))
    assert index.add([4], unit(rng, 1)).tolist() == [2]


def test_set_values_changes_the_eviction_order(impl: type[IndexCore],
                                               rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=3)
    index.add([1, 2, 3], unit(rng, 3), [0.1, 0.5, 0.9])
    index.set_values([1, 3], [0.8, 0.0])
    index.set_values([1], [0.8])  # the same value twice must not double-count
    assert index.get_values([3, 1, 2]).tolist() == [0.0, 0.8, 0.5]
    assert index.add([4, 5], unit(rng, 2), [0.7, 0.6]).tolist() == [3, 2]
    with pytest.raises(InvalidArgument):
        index.set_values([1, 99], [0.1, 0.1])
    with pytest.raises(InvalidArgument):
        index.set_values([1], [float("nan")])
    assert index.get_values([1]).tolist() == [0.8]


@pytest.mark.parametrize("case", [
    "wrong_dim", "nan", "inf", "zero", "negative_id", "float_ids", "bool_ids", "dup_ids",
    "rows_vs_ids", "values_shape", "values_nan", "3d", "strings",
])
def test_bad_add_is_refused_and_changes_nothing(impl: type[IndexCore],
                                                rng: np.random.Generator, case: str) -> None:
    index = impl(dim=DIM, capacity=4)
    index.add([1, 2, 3, 4], unit(rng, 4), [0.4, 0.3, 0.2, 0.1])
    probe = unit(rng, 1)
    before = snapshot(index, probe)
    good = unit(rng, 2)
    bad_vec = good.copy()
    args: dict[str, tuple[object, object, object]] = {
        "wrong_dim": ([7, 8], unit(rng, 2, DIM + 1), None),
        "nan": ([7, 8], np.where(np.eye(2, DIM) > 0, np.nan, good), None),
        "inf": ([7, 8], np.where(np.eye(2, DIM) > 0, np.inf, good), None),
        "zero": ([7, 8], np.vstack([good[0], np.zeros(DIM)]), None),
        "negative_id": ([7, -1], good, None),
        "float_ids": (np.asarray([7.0, 8.0]), good, None),
        "bool_ids": (np.asarray([True, False]), good, None),
        "dup_ids": ([7, 7], good, None),
        "rows_vs_ids": ([7, 8, 9], good, None),
        "values_shape": ([7, 8], good, [1.0]),
        "values_nan": ([7, 8], good, [1.0, float("nan")]),
        "3d": ([7, 8], bad_vec[None, :, :], None),
        "strings": ([7, 8], np.asarray([["a"] * DIM] * 2), None),
    }
    ids, vectors, values = args[case]
    expected: type[Exception] = InvalidArgument
    if case == "wrong_dim":
        expected = DimensionMismatch
    elif case in ("nan", "inf", "zero"):
        expected = InvalidVector
    with pytest.raises(expected) as info:
        index.add(ids, vectors, values)  # type: ignore[arg-type]
    assert isinstance(info.value, VectorIndexError)
    assert snapshot(index, probe) == before


@pytest.mark.parametrize("k", [0, -1, True, 1.5, "3"])
def test_bad_k_is_refused(impl: type[IndexCore], rng: np.random.Generator, k: object) -> None:
    index = impl(dim=DIM, capacity=4)
    index.add([1], unit(rng, 1))
    with pytest.raises(InvalidArgument):
        index.search(unit(rng, 1), k)  # type: ignore[arg-type]


def test_bad_queries_are_refused(impl: type[IndexCore], rng: np.random.Generator) -> None:
    index = impl(dim=DIM, capacity=4)
    index.add([1], unit(rng, 1))
    with pytest.raises(DimensionMismatch):
        index.search(unit(rng, 1, DIM - 1), 1)
    with pytest.raises(InvalidVector):
        index.search(np.full(DIM, np.nan), 1)
    with pytest.raises(InvalidVector):
        index.search(np.zeros(DIM), 1)
    for bad in (np.nan, np.inf):  # float32 single queries take a fast path
        q = unit(rng, 1)
        q[0, 3] = bad
        with pytest.raises(InvalidVector):
            index.search(q.astype(np.float32), 1)
    with pytest.raises(InvalidVector):
        index.search(np.full((1, DIM), 1e-30, dtype=np.float32), 1)
    big = np.full((1, DIM), 1e30, dtype=np.float32)  # overflows a float32 norm, still valid
    assert index.search(big, 1)[1][0, 0] == 1
    with pytest.raises(InvalidArgument):
        index.remove([-5])
    with pytest.raises(InvalidArgument):
        index.get_values([2])


def test_bad_construction_is_refused(impl: type[IndexCore]) -> None:
    for dim, capacity in ((0, 10), (DIM, 0), (DIM, True)):
        with pytest.raises(InvalidArgument):
            impl(dim=dim, capacity=capacity)  # type: ignore[arg-type]


def test_save_and_load_round_trip(impl: type[IndexCore], rng: np.random.Generator,
                                  tmp_path: Path) -> None:
    settings = IndexSettings(ef_search=48)
    index = impl(dim=DIM, capacity=6, settings=settings)
    vecs = unit(rng, 6)
    index.add(np.arange(6), vecs, [0.3, 0.1, 0.5, 0.1, 0.9, 0.2])
    index.remove([5])
    path = tmp_path / "patterns.index"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["patterns.index"], "no temp file left"
    loaded = impl.load(path)
    assert type(loaded) is impl
    assert (loaded.dim, loaded.capacity, len(loaded)) == (DIM, 6, 5)
    assert loaded.ids().tolist() == index.ids().tolist()
    assert loaded.get_values(loaded.ids()).tolist() == index.get_values(index.ids()).tolist()
    np.testing.assert_array_equal(loaded.get_vectors([0, 4]), index.get_vectors([0, 4]))
    queries = unit(rng, 4)
    for a, b in zip(loaded.search(queries, 3), index.search(queries, 3), strict=True):
        np.testing.assert_array_equal(a, b)
    # Ages survive: of the two 0.1 entries, 1 is older than 3.
    assert loaded.add([10, 11], unit(rng, 2), [0.8, 0.8]).tolist() == [1]
    assert loaded.add([12], unit(rng, 1), [0.8]).tolist() == [3]
    # Saving again over the same path replaces the file.
    loaded.save(path)
    assert impl.load(path).ids().tolist() == loaded.ids().tolist()


def test_empty_index_round_trips(impl: type[IndexCore], tmp_path: Path) -> None:
    impl(dim=DIM, capacity=3).save(tmp_path / "e")
    loaded = impl.load(tmp_path / "e")
    assert len(loaded) == 0 and loaded.capacity == 3


def test_load_refuses_bad_files(impl: type[IndexCore], rng: np.random.Generator,
                                tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="no such file"):
        impl.load(tmp_path / "missing")
    (tmp_path / "garbage").write_bytes(b"not an index at all" * 10)
    with pytest.raises(IndexFileError):
        impl.load(tmp_path / "garbage")
    index = impl(dim=DIM, capacity=10)
    index.add(np.arange(8), unit(rng, 8))
    good = tmp_path / "good"
    index.save(good)
    data = good.read_bytes()
    (tmp_path / "short").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError):
        impl.load(tmp_path / "short")
    # A flipped byte is either refused or lands where nothing is read (zip and
    # npy header padding): it never yields a different index.
    refused = 0
    for pos in np.linspace(0, len(data) - 1, 60).astype(int).tolist():
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        (tmp_path / "flipped").write_bytes(bytes(flipped))
        try:
            loaded = impl.load(tmp_path / "flipped")
        except IndexFileError:
            refused += 1
            continue
        assert loaded.ids().tolist() == index.ids().tolist()
        np.testing.assert_array_equal(loaded.get_vectors(loaded.ids()),
                                      index.get_vectors(index.ids()))
    assert refused >= 30
    other = BruteForceIndex if impl is HnswIndex else HnswIndex
    with pytest.raises(IndexFileError, match="not"):
        other.load(good)


def test_load_refuses_consistent_but_invalid_content(impl: type[IndexCore],
                                                      rng: np.random.Generator,
                                                      tmp_path: Path) -> None:
    from omega.index.fileformat import checksum as _checksum

    index = impl(dim=DIM, capacity=10)
    index.add(np.arange(4), unit(rng, 4))
    path = tmp_path / "i"
    index.save(path)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["ids"] = np.asarray([0, 1, 1, 2], dtype=np.int64)  # duplicate id
    arrays["checksum"] = _checksum(arrays)
    with open(tmp_path / "dup", "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(IndexFileError, match="unique"):
        impl.load(tmp_path / "dup")


def test_save_failure_is_typed_and_leaves_nothing(impl: type[IndexCore],
                                                  tmp_path: Path) -> None:
    index = impl(dim=DIM, capacity=3)
    with pytest.raises(IndexFileError):
        index.save(tmp_path / "no" / "such" / "dir" / "x")
    target = tmp_path / "is_a_dir"
    target.mkdir()
    with pytest.raises(IndexFileError):
        index.save(target)
    assert sorted(os.listdir(tmp_path)) == ["is_a_dir"]


def test_random_operations_agree_with_a_reference_model(impl: type[IndexCore]) -> None:
    """A seeded random walk of add/replace/remove/set_values against a plain-Python model."""
    rng = np.random.default_rng(11)
    cap = 40
    index = impl(dim=DIM, capacity=cap)
    model: dict[int, tuple[float, int, np.ndarray]] = {}  # id -> (value, age, unit vector)
    age = 0
    hits = total = 0
    for step in range(400):
        op = rng.integers(0, 10)
        if op < 6:
            n = int(rng.integers(1, 6))
            ids = rng.choice(80, size=n, replace=False)
            vecs = unit(rng, n)
            vals = rng.integers(0, 5, size=n).astype(float) / 4  # many ties on purpose
            for i, v, x in zip(ids.tolist(), vecs, vals.tolist(), strict=True):
                model[i] = (x, age, v)
                age += 1
            expected = []
            while len(model) > cap:
                victim = min(model, key=lambda i: (model[i][0], model[i][1]))
                expected.append(victim)
                del model[victim]
            assert index.add(ids, vecs, vals).tolist() == expected, f"step {step}"
        elif op < 8:
            ids = rng.choice(80, size=int(rng.integers(1, 6)), replace=False)
            present = [i for i in ids.tolist() if i in model]
            for i in present:
                del model[i]
            assert index.remove(ids) == len(present)
        elif model:
            ids = rng.choice(sorted(model), size=min(3, len(model)), replace=False)
            vals = rng.integers(0, 5, size=ids.size).astype(float) / 4
            index.set_values(ids, vals)
            for i, x in zip(ids.tolist(), vals.tolist(), strict=True):
                model[i] = (x, model[i][1], model[i][2])
        assert index.ids().tolist() == sorted(model)
        if model:
            q = unit(rng, 1)
            keys = sorted(model)
            exact = np.stack([model[i][2] for i in keys]) @ q[0]
            truth = {keys[j] for j in np.argsort(-exact)[:5]}
            _, found = index.search(q, 5)
            hits += len(truth & set(found[0].tolist()))
            total += len(truth)
    assert hits / total >= 0.99
