"""Catalog files: MovieLens ``movies.csv`` / ``u.item`` and Omega's JSON lines.

The one place that reads catalog files, used by the TV's operator commands
(``omega-node tv import-catalog``), the local cluster and the quality simulator,
so that neither the operators' tools nor the simulator import the other.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from omega.errors import OmegaError
from omega.protocol import CatalogEntry

__all__ = [
    "ML100K_GENRES",
    "CatalogFileError",
    "DatasetError",
    "Item",
    "item_text",
    "read_catalog",
    "read_movies_csv",
    "read_movies_dat",
    "read_u_item",
    "split_title",
]

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



def read_movies_dat(path: Path) -> Iterator[tuple[int, Item]]:
    """The titles of an ml-1m / ml-10m ``movies.dat`` (``MovieID::Title::Genres``).

    ml-1m writes latin-1, ml-10m UTF-8: the file is read as UTF-8 when it decodes
    as such (latin-1 accents rarely do), else as latin-1, which reads any byte.
    A title may itself hold ``::``; the id is the first field and the genres the last.
    """
    try:
        lines = _lines(path, "utf-8")
    except DatasetError as exc:
        if not exc.message.startswith("not utf-8"):
            raise
        lines = _lines(path, "latin-1")
    for line, text in enumerate(lines, start=1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        head, sep, rest = text.partition("::")
        title_raw, sep2, genres_raw = rest.rpartition("::")
        if not sep or not sep2:
            raise DatasetError(path, f"line {line}: expected MovieID::Title::Genres")
        item_id = _int(path, line, head.strip(), "MovieID")
        title, year = split_title(title_raw)
        if not title:
            raise DatasetError(path, f"line {line}: empty title")
        genres_raw = genres_raw.strip()
        genres = () if genres_raw in ("", _NO_GENRES) else tuple(genres_raw.split("|"))
        yield item_id, Item(item_id, title, year, genres)


def read_u_item(path: Path) -> Iterator[tuple[int, Item]]:
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


class CatalogFileError(OmegaError):
    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")


def read_catalog(path: Path) -> Iterator[CatalogEntry]:
    """MovieLens ``movies.csv`` (movieId,title,genres) or JSON lines with
    ``id``, ``title`` and optional ``genres``, ``description``, ``year``, ``duration_min``."""
    if path.suffix == ".csv":
        for item_id, item in read_movies_csv(path):
            yield CatalogEntry(
                id=str(item_id),
                title=item.title[:256],
                genres=item.genres,
                description="",
                year=item.year or 0,
                duration_min=0,
            )
        return
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                yield CatalogEntry(
                    id=str(obj["id"]),
                    title=obj["title"],
                    genres=tuple(obj.get("genres", ())),
                    description=obj.get("description", ""),
                    year=int(obj.get("year") or 0),
                    duration_min=int(obj.get("duration_min") or 0),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise CatalogFileError(path, line, f"bad catalog entry: {exc}") from None
