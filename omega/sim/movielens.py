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
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from omega.errors import OmegaError

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

#: The 19 genre flags of ml-100k's u.item, in file order.
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

_NO_GENRES = "(no genres listed)"
# A trailing "(1995)" or a series range "(2006–2007)"; the first year is kept.
_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$")
_RELEASE_YEAR = re.compile(r"(\d{4})\s*$")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class DatasetError(OmegaError):
    """A data folder is missing, of an unknown layout, or holds a malformed file."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class Item:
    """One catalog title. ``title`` is without its year, which is in ``year``."""

    id: int
    title: str
    year: int | None
    genres: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text embedded for this item (see :func:`item_text`)."""
        return item_text(self.title, self.year, self.genres)


def item_text(title: str, year: int | None, genres: Sequence[str]) -> str:
    """``"Title (year). Genres: a, b, c"``, e.g. ``"Heat (1995). Genres: Action, Crime"``.

    A title without a year reads ``"Title. Genres: ..."``; without genres the
    text is the title alone, as ``omega.brain.content.content_text`` writes it
    (so the brain finds these texts in the runner's shared embedding cache).
    """
    head = f"{title} ({year})" if year is not None else title
    return f"{head}. Genres: {', '.join(genres)}" if genres else head


def split_title(raw: str) -> tuple[str, int | None]:
    """Split a MovieLens title ``"Heat (1995)"`` into ``("Heat", 1995)``."""
    text = raw.strip()
    match = _YEAR.match(text)
    if match is None:
        return text, None
    return match.group("title"), int(match.group("year"))


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


def _lines(path: Path, encoding: str) -> list[str]:
    # Whole-file reads: the largest file (ratings.csv) is a few MB.
    try:
        return path.read_text(encoding=encoding).splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"not {encoding} text: {exc}") from None
    except OSError as exc:
        raise DatasetError(path, f"cannot read: {exc.strerror or exc}") from None


def read_movies_csv(path: Path) -> Iterator[tuple[int, Item]]:
    """The titles of a MovieLens ``movies.csv`` (movieId,title,genres), year split off."""
    reader = csv.reader(_lines(path, "utf-8"))
    _expect_header(path, next(reader, None), ["movieId", "title", "genres"])
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) != 3:
            raise DatasetError(path, f"line {line}: expected 3 fields, got {len(row)}")
        item_id = _int(path, line, row[0], "movieId")
        title, year = split_title(row[1])
        genres = () if row[2] in ("", _NO_GENRES) else tuple(row[2].split("|"))
        yield item_id, Item(item_id, title, year, genres)


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


def _read_u_item(path: Path) -> Iterator[tuple[int, Item]]:
    n_genres = len(ML100K_GENRES)
    for line, text in enumerate(_lines(path, "latin-1"), start=1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split("|")
        if len(fields) < 2 + n_genres:
            raise DatasetError(path, f"line {line}: expected at least {2 + n_genres} fields")
        item_id = _int(path, line, fields[0], "item id")
        title, year = split_title(fields[1])
        if year is None and len(fields) > 2 + n_genres:
            # Some titles lack "(year)"; the release date (field 3) may hold it.
            release = _RELEASE_YEAR.search(fields[2])
            year = int(release.group(1)) if release else None
        flags = fields[-n_genres:]
        if any(f not in ("0", "1") for f in flags):
            raise DatasetError(path, f"line {line}: genre flags must be 0 or 1")
        genres = tuple(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1")
        yield item_id, Item(item_id, title, year, genres)


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


def _int(path: Path, line: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetError(path, f"line {line}: {what} {text!r} is not an integer") from None


def _expect_header(path: Path, header: list[str] | None, expected: list[str]) -> None:
    if header is None:
        raise DatasetError(path, "empty file")
    got = [h.strip().lstrip("\ufeff") for h in header]
    if got != expected:
        raise DatasetError(path, f"header {','.join(got)!r}, expected {','.join(expected)!r}")
