"""MovieLens loading and the leave-last-out split of the quality benchmark.

Three layouts are read, detected from the folder's files:

- ``ml-latest``: ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
  (movieId,title,genres; quoted titles may hold commas; genres separated by ``|``).
  Also the layout of ml-20m, ml-25m and ml-32m.
- ``ml-100k``: ``u.data`` (user, item, rating, timestamp, tab-separated) and ``u.item``
  (pipe-separated, latin-1; title in field 2, 19 genre flags at the end).
- ``ml-1m`` (also ml-10m): ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``;
  ml-10m has half stars) and ``movies.dat`` (``MovieID::Title::Genres``; ml-1m is
  latin-1, ml-10m UTF-8: read as UTF-8, else latin-1).

A folder holding none of them but exactly one subfolder that holds one (the
parent a zip was unpacked into) is read from that subfolder. Ratings files are
read in blocks of lines parsed by numpy, so memory stays at a few arrays of the
ratings (ml-25m's 25 M lines included); a block numpy cannot parse exactly is
re-read line by line, which names the file and line of the first bad one.

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
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

# The catalog readers moved to omega.catalog_files; their names stay importable here.
from omega.catalog_files import ML100K_GENRES as ML100K_GENRES
from omega.catalog_files import DatasetError as DatasetError
from omega.catalog_files import Item as Item
from omega.catalog_files import _expect_header, _int
from omega.catalog_files import item_text as item_text
from omega.catalog_files import read_movies_csv as read_movies_csv
from omega.catalog_files import read_movies_dat as read_movies_dat
from omega.catalog_files import read_u_item as _read_u_item
from omega.catalog_files import split_title as split_title

Layout = Literal["ml-latest", "ml-100k", "ml-1m"]
#: Each layout's (ratings file, catalog file), in detection order.
LAYOUT_FILES: dict[Layout, tuple[str, str]] = {
    "ml-latest": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
}
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


def _layout_of(path: Path) -> Layout | None:
    for layout, (ratings, catalog) in LAYOUT_FILES.items():
        if (path / ratings).is_file() and (path / catalog).is_file():
            return layout
    return None


def find_data_folder(path: Path) -> tuple[Path, Layout]:
    """The folder holding MovieLens files and its layout: ``path`` itself, or its one
    MovieLens subfolder (the parent a zip was unpacked into). :class:`DatasetError`
    if there is none, or several subfolders (ambiguous: the caller must choose)."""
    if not path.is_dir():
        raise DatasetError(path, "not a folder")
    layout = _layout_of(path)
    if layout is not None:
        return path, layout
    try:
        subfolders = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError as exc:
        raise DatasetError(path, f"cannot list: {exc.strerror or exc}") from None
    found = [(p, lay) for p in subfolders if (lay := _layout_of(p)) is not None]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f"{p.name} ({lay})" for p, lay in found)
        raise DatasetError(path, f"several MovieLens folders inside: {names}; pass one of them")
    expected = "; ".join(f"{r} + {c} ({lay})" for lay, (r, c) in LAYOUT_FILES.items())
    raise DatasetError(path, f"no MovieLens data: expected {expected}, here or in one subfolder")


def detect_layout(path: Path) -> Layout:
    """Which MovieLens layout the folder (or its one MovieLens subfolder) holds."""
    return find_data_folder(path)[1]


def load_movielens(path: Path | str) -> MovieLens:
    """Load a MovieLens folder of any layout (or the one MovieLens folder inside it)."""
    folder, layout = find_data_folder(Path(path))
    ratings_name, catalog_name = LAYOUT_FILES[layout]
    ratings_file, catalog_file = folder / ratings_name, folder / catalog_name
    if layout == "ml-latest":
        meta = dict(read_movies_csv(catalog_file))
    elif layout == "ml-100k":
        meta = dict(_read_u_item(catalog_file))
    else:
        meta = dict(read_movies_dat(catalog_file))
    users, item_ids, ratings, timestamps = read_ratings(ratings_file, layout)
    if not len(users):
        raise DatasetError(ratings_file, "no ratings")
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



#: Bytes of a ratings file parsed at once (whole lines): bounds the parser's memory.
RATINGS_BLOCK = 8 << 20
#: The field separator of each layout's ratings file (u.data: tabs; the slow path
#: accepts any whitespace there, as before).
_RATING_SEPARATORS: dict[Layout, bytes] = {"ml-latest": b",", "ml-100k": b"\t",
                                           "ml-1m": b"::"}
_RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]
# Integers above this do not survive the float64 the block parser reads.
_EXACT = float(2**53)

RatingArrays = tuple[IntArray, IntArray, FloatArray, IntArray]


def read_ratings(path: Path, layout: Layout, block: int = RATINGS_BLOCK) -> RatingArrays:
    """(users, items, ratings, timestamps) of a layout's ratings file.

    Read in blocks of whole lines of about ``block`` bytes; each block is parsed by
    numpy (separators made tabs, every line checked to hold exactly 4 fields, ids and
    timestamps integral, ratings finite). A block that fails any check is parsed
    again line by line (:func:`_rating_row`), which either accepts it (e.g. u.data
    with spaces) or raises a :class:`DatasetError` naming the file and line.
    """
    sep = _RATING_SEPARATORS[layout]
    parts: list[npt.NDArray[np.float64]] = []
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DatasetError(path, f"cannot read: {exc.strerror or exc}") from None
    with fh:
        line = 1
        if layout == "ml-latest":
            header = fh.readline().decode("utf-8", "replace")
            _expect_header(path, next(csv.reader([header]), None), _RATINGS_HEADER)
            line = 2
        rest = b""
        while True:
            chunk = fh.read(block)
            data = rest + chunk
            if not chunk:
                rest = b""
            else:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no whole line yet: read on
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            if data:
                parts.append(_parse_block(path, layout, sep, data, line))
                line += data.count(b"\n")
            if not chunk:
                break
    rows = np.concatenate(parts) if parts else np.zeros((0, 4))
    return (rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64),
            np.ascontiguousarray(rows[:, 2]), rows[:, 3].astype(np.int64))


def _parse_block(path: Path, layout: Layout, sep: bytes, data: bytes, first_line: int
                 ) -> npt.NDArray[np.float64]:
    """An (n, 4) float64 array of the block's ratings; ``first_line`` numbers its first line."""
    rows = _parse_block_fast(data, sep)
    return rows if rows is not None else _parse_block_slow(path, layout, data, first_line)


def _parse_block_fast(data: bytes, sep: bytes) -> npt.NDArray[np.float64] | None:
    text = data.replace(b"\r", b"")
    if sep != b"\t":
        if b"\t" in text or b'"' in text:
            return None
        text = text.replace(sep, b"\t")
    raw = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    if not text.endswith(b"\n"):
        ends = np.r_[ends, len(raw)]
    starts = np.r_[0, ends[:-1] + 1]
    tabs = np.r_[0, np.cumsum(raw == 9)]
    per_line = tabs[ends] - tabs[starts]
    blank = ends == starts
    if not np.all((per_line == 3) | (blank & (per_line == 0))):
        return None
    tokens = text.split()
    if len(tokens) != 4 * int((~blank).sum()):
        return None  # whitespace inside a field
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.array(tokens, dtype=np.float64).reshape(-1, 4)
    except (ValueError, RuntimeWarning):
        return None
    ints = values[:, [0, 1, 3]]
    if not (np.isfinite(values).all() and (ints == np.floor(ints)).all()
            and (np.abs(ints) < _EXACT).all()):
        return None
    return values


def _parse_block_slow(path: Path, layout: Layout, data: bytes, first_line: int
                      ) -> npt.NDArray[np.float64]:
    text = data.decode("utf-8", "replace")  # ratings are ASCII; a stray byte fails below
    out: list[tuple[int, int, float, int]] = []

    def add(line: int, fields: Sequence[str]) -> None:
        row = _rating_row(path, line, fields)
        if max(abs(row[0]), abs(row[1]), abs(row[3])) >= _EXACT:
            raise DatasetError(path, f"line {line}: an id or timestamp beyond 2**53")
        out.append(row)

    if layout == "ml-latest":
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            if row:
                add(first_line + reader.line_num - 1, row)
    else:
        for n, line in enumerate(text.splitlines(), start=first_line):
            if line.strip():
                fields = line.split("::") if layout == "ml-1m" else line.split()
                add(n, [f.strip() for f in fields])
    return np.array(out, dtype=np.float64).reshape(-1, 4)


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


