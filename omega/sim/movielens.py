"""MovieLens loading and the leave-last-out split of the quality benchmark.

Two layouts are read, detected from the folder's files:

- ``ml-latest``: ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
  (movieId,title,genres; quoted titles may hold commas; genres separated by ``|``).
- ``ml-100k``: ``u.data`` (user, item, rating, timestamp, tab-separated) and ``u.item``
  (pipe-separated, latin-1; title in field 2, 19 genre flags at the end).

The protocol (docs/BENCHMARKS.md §1) is implemented by :func:`split_leave_last`:
every rating is a view (rating >= 4 watched at 0.95, else 0.3), each user's
interactions sorted by timestamp, ties within one second in a seeded random order
per user (not by item id: an id order makes the highest id of a burst the test
item, an artifact sequence statistics learn), the last one is the test item, the
second-to-last the validation item, the rest the training history; users with
fewer than 5 interactions are dropped. The catalog is every item anyone rated.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

# The catalog readers moved to omega.catalog_files; their names stay importable here.
from omega.catalog_files import ML100K_GENRES as ML100K_GENRES
from omega.catalog_files import DatasetError as DatasetError
from omega.catalog_files import Item as Item
from omega.catalog_files import _expect_header, _int, _lines
from omega.catalog_files import item_text as item_text
from omega.catalog_files import read_movies_csv as read_movies_csv
from omega.catalog_files import read_u_item as _read_u_item
from omega.catalog_files import split_title as split_title

Layout = Literal["ml-latest", "ml-100k"]
#: The test item's history (BENCHMARKS.md §1): "all" (B, what a TV knows: training +
#: validation item) or "train" (A, two steps ahead: the training history alone).
History = Literal["all", "train"]
HISTORIES: tuple[History, ...] = ("all", "train")

#: A rating at or above this is a successful view.
SUCCESS_RATING = 4.0
#: Watch fractions replayed for a successful / an unsuccessful view.
SUCCESS_FRACTION = 0.95
FAIL_FRACTION = 0.3
#: Users with fewer interactions are dropped.
MIN_INTERACTIONS = 5
#: Cold-start slice: this many first interactions are the history, the next is the target.
COLD_HISTORY = 5
#: Seed of the per-user random order of interactions within one second (BENCHMARKS.md §1).
TIE_SEED = 20261202


IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]



@dataclass(frozen=True, eq=False)
class MovieLens:
    """A loaded data set. Interactions refer to items by catalog index."""

    path: Path
    layout: Layout
    items: tuple[Item, ...]
    """The catalog: every item somebody interacted with, sorted by id."""
    users: IntArray
    item_index: IntArray
    ratings: FloatArray
    timestamps: IntArray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def texts(self) -> list[str]:
        """The embedding text of every catalog item, in catalog order."""
        return [item.text for item in self.items]


@dataclass(frozen=True, eq=False)
class UserHistory:
    """One user's interactions in protocol order (timestamp; ties in a seeded random order)."""

    user_id: int
    items: IntArray
    """Catalog indices."""
    timestamps: IntArray
    fractions: FloatArray
    """Watch fraction replayed for each interaction."""

    @property
    def train(self) -> IntArray:
        return self.items[:-2]

    def test_history(self, history: History) -> IntArray:
        """The views the test item is scored from: training (+ validation with "all")."""
        return self.items[:-1] if history == "all" else self.items[:-2]

    @property
    def val_item(self) -> int:
        return int(self.items[-2])

    @property
    def test_item(self) -> int:
        return int(self.items[-1])

    @property
    def has_cold(self) -> bool:
        return len(self.items) > COLD_HISTORY

    @property
    def cold_history(self) -> IntArray:
        return self.items[:COLD_HISTORY]

    @property
    def cold_item(self) -> int:
        return int(self.items[COLD_HISTORY])


@dataclass(frozen=True, eq=False)
class Split:
    """The protocol's split: kept users (by id) over a catalog of ``n_items``."""

    n_items: int
    users: tuple[UserHistory, ...]
    dropped_users: int = 0
    _matrix: list[FloatArray] = field(default_factory=list, repr=False)

    def train_matrix(self) -> FloatArray:
        """Binary users × items matrix of the training histories (cached)."""
        if not self._matrix:
            x = np.zeros((len(self.users), self.n_items), dtype=np.float64)
            for row, user in enumerate(self.users):
                x[row, user.train] = 1.0
            self._matrix.append(x)
        return self._matrix[0]

    def cold_users(self) -> list[int]:
        """Rows of the users that have a cold-start target (a 6th interaction)."""
        return [row for row, user in enumerate(self.users) if user.has_cold]


def watch_fraction(rating: float) -> float:
    """The protocol's implicit-feedback mapping of a rating to a watch fraction."""
    return SUCCESS_FRACTION if rating >= SUCCESS_RATING else FAIL_FRACTION


def detect_layout(path: Path) -> Layout:
    """Which MovieLens layout the folder holds; :class:`DatasetError` if neither."""
    if not path.is_dir():
        raise DatasetError(path, "not a folder")
    if (path / "ratings.csv").is_file() and (path / "movies.csv").is_file():
        return "ml-latest"
    if (path / "u.data").is_file() and (path / "u.item").is_file():
        return "ml-100k"
    raise DatasetError(
        path,
        "no MovieLens data: expected ratings.csv + movies.csv (ml-latest-small) "
        "or u.data + u.item (ml-100k)",
    )


def load_movielens(path: Path | str) -> MovieLens:
    """Load a MovieLens folder of either layout."""
    folder = Path(path)
    layout = detect_layout(folder)
    if layout == "ml-latest":
        meta = dict(read_movies_csv(folder / "movies.csv"))
        rows = list(_read_ratings_csv(folder / "ratings.csv"))
        ratings_file = folder / "ratings.csv"
    else:
        meta = dict(_read_u_item(folder / "u.item"))
        rows = list(_read_u_data(folder / "u.data"))
        ratings_file = folder / "u.data"
    if not rows:
        raise DatasetError(ratings_file, "no ratings")
    users = np.array([r[0] for r in rows], dtype=np.int64)
    item_ids = np.array([r[1] for r in rows], dtype=np.int64)
    ratings = np.array([r[2] for r in rows], dtype=np.float64)
    timestamps = np.array([r[3] for r in rows], dtype=np.int64)
    catalog_ids, item_index = np.unique(item_ids, return_inverse=True)
    missing = [int(i) for i in catalog_ids if int(i) not in meta]
    if missing:
        shown = ", ".join(map(str, missing[:5]))
        raise DatasetError(ratings_file, f"{len(missing)} rated items have no metadata: {shown}")
    items = tuple(meta[int(i)] for i in catalog_ids)
    return MovieLens(folder, layout, items, users, item_index.astype(np.int64), ratings, timestamps)


def split_leave_last(
    data: MovieLens, min_interactions: int = MIN_INTERACTIONS, tie_seed: int = TIE_SEED
) -> Split:
    """The protocol's per-user split; see the module docstring.

    Interactions of one user within the same second are ordered by a random key
    drawn from ``numpy.random.default_rng([tie_seed, user id])``: the same order on
    every run and whatever the file order, but not the item ids' order. A repeated
    (user, item) pair keeps its first interaction only, so a test item can never
    also be in the training history.
    """
    ties = tie_keys(data.users, data.item_index, data.timestamps, tie_seed)
    order = np.lexsort((ties, data.timestamps, data.users))
    users = data.users[order]
    items = data.item_index[order]
    times = data.timestamps[order]
    ratings = data.ratings[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    kept: list[UserHistory] = []
    dropped = 0
    for lo, hi in zip(starts, ends, strict=True):
        seq = items[lo:hi]
        _, first = np.unique(seq, return_index=True)
        keep = np.sort(first) + lo
        if len(keep) < min_interactions:
            dropped += 1
            continue
        fractions = np.where(ratings[keep] >= SUCCESS_RATING, SUCCESS_FRACTION, FAIL_FRACTION)
        kept.append(
            UserHistory(
                int(users[lo]), items[keep].copy(), times[keep].copy(), fractions.astype(np.float64)
            )
        )
    return Split(data.n_items, tuple(kept), dropped)


def tie_keys(users: IntArray, items: IntArray, timestamps: IntArray,
             seed: int = TIE_SEED) -> FloatArray:
    """A random sort key per interaction: each user's keys from its own seeded generator.

    The keys of a user are drawn for its interactions in (timestamp, item) order, so
    they depend on the seed and the data, not on the order of the file's lines.
    """
    keys = np.empty(len(users), dtype=np.float64)
    order = np.lexsort((items, timestamps, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        rng = np.random.default_rng([seed, int(sorted_users[lo])])
        keys[order[lo:hi]] = rng.random(hi - lo)
    return keys


# -- readers -----------------------------------------------------------------



def _read_ratings_csv(path: Path) -> Iterator[tuple[int, int, float, int]]:
    reader = csv.reader(_lines(path, "utf-8"))
    _expect_header(path, next(reader, None), ["userId", "movieId", "rating", "timestamp"])
    for row in reader:
        if row:
            yield _rating_row(path, reader.line_num, row)


def _read_u_data(path: Path) -> Iterator[tuple[int, int, float, int]]:
    for line, text in enumerate(_lines(path, "latin-1"), start=1):
        if text.strip():
            yield _rating_row(path, line, text.split())


def _rating_row(path: Path, line: int, row: Sequence[str]) -> tuple[int, int, float, int]:
    if len(row) != 4:
        raise DatasetError(path, f"line {line}: expected 4 fields, got {len(row)}")
    user = _int(path, line, row[0], "user")
    item = _int(path, line, row[1], "item")
    try:
        rating = float(row[2])
    except ValueError:
        raise DatasetError(path, f"line {line}: rating {row[2]!r} is not a number") from None
    if not np.isfinite(rating):
        raise DatasetError(path, f"line {line}: rating {row[2]!r} is not finite")
    return user, item, rating, _int(path, line, row[3], "timestamp")


