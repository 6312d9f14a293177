"""Small synthetic MovieLens worlds for the omega.sim tests, written in every layout.

The same world written as ml-latest (ratings.csv + movies.csv), as ml-100k
(u.data + u.item) and as ml-1m / ml-10m (ratings.dat + movies.dat) loads to the
same catalog and interactions, so tests can check that the readers agree. Users
belong to taste clusters and watch their cluster's titles in a fixed cyclic order,
so collaborative baselines have a signal to find.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from omega.sim.quality import QualitySettings

# Genres common to both layouts (ml-100k has "Children's", ml-latest "Children"), in
# ml-100k flag order, so both layouts list them alike.
CLUSTERS: tuple[tuple[str, ...], ...] = (
    ("Action", "Crime", "Thriller"),
    ("Comedy", "Romance"),
    ("Drama", "War"),
    ("Adventure", "Sci-Fi"),
)
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


#: Baseline grids small enough for unit tests; SASRec off (tests/unit/test_sim_sasrec.py
#: turns it on with its own small model).
FAST_QUALITY = QualitySettings(
    ease_lambdas=(5.0, 50.0), knn_neighbours=(5, 10), content_last_n=(1, 3),
    content_popularity=(0.2,), cold_folds=4, held_out_positions=0, sasrec=None,
)  # fmt: skip


@dataclass(frozen=True)
class Movie:
    id: int
    title: str
    """As MovieLens writes it, year included."""
    genres: tuple[str, ...]


@dataclass(frozen=True)
class World:
    movies: tuple[Movie, ...]
    ratings: tuple[tuple[int, int, int, int], ...]
    """(user, item, rating, timestamp), integer ratings so both layouts hold them."""


def special_movies() -> list[Movie]:
    """Titles that exercise the parser: a comma, no year, a year range, no genres."""
    return [
        Movie(6, "Heat (1995)", ("Action", "Crime", "Thriller")),
        Movie(11, "American President, The (1995)", ("Comedy", "Drama", "Romance")),
        Movie(40697, "Babylon 5", ("Sci-Fi",)),
        Movie(171749, "Death Note: Desu nôto (2006–2007)", ()),
        Movie(500, "Café Lumière (2003)", ("Drama",)),
    ]


def make_world(n_users: int = 40, per_cluster: int = 8, seed: int = 0) -> World:
    rng = random.Random(seed)
    movies = special_movies()
    next_id = 1000
    by_cluster: list[list[int]] = []
    for c, genres in enumerate(CLUSTERS):
        ids = []
        for j in range(per_cluster):
            movies.append(Movie(next_id, f"Film {c}-{j} ({1970 + 3 * j + c})", genres))
            ids.append(next_id)
            next_id += 7  # ids are not contiguous
        by_cluster.append(ids)
    specials = [m.id for m in special_movies()]
    ratings: list[tuple[int, int, int, int]] = []
    for user in range(1, n_users + 1):
        cluster = by_cluster[user % len(CLUSTERS)]
        start = rng.randrange(len(cluster))
        seq = [cluster[(start + j) % len(cluster)] for j in range(len(cluster))]
        seq.insert(rng.randrange(len(seq)), specials[user % len(specials)])
        length = rng.randrange(6, len(seq) + 1)
        base = 1_000_000_000 + user * 1_000_000  # unique timestamps per user
        for step, item in enumerate(seq[:length]):
            ratings.append((user, item, rng.choice((2, 3, 4, 5, 5)), base + 60 * step))
    # A user with too few interactions: dropped by the split.
    ratings += [(n_users + 1, by_cluster[0][j], 4, 2_000_000_000 + j) for j in range(4)]
    rng.shuffle(ratings)  # the loader must sort, not trust file order
    return World(tuple(movies), tuple(ratings))


def write_ml_latest(folder: Path, world: World) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "movies.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["movieId", "title", "genres"])
        for m in world.movies:
            w.writerow([m.id, m.title, "|".join(m.genres) or "(no genres listed)"])
    with (folder / "ratings.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for user, item, rating, ts in world.ratings:
            w.writerow([user, item, f"{rating:.1f}", ts])
    return folder


def write_ml100k(folder: Path, world: World) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for m in world.movies:
        # ml-100k has no ranges: the range title gets its first year.
        title = m.title.replace("(2006–2007)", "(2006)")
        flags = "|".join("1" if g in m.genres else "0" for g in ML100K_GENRES)
        # A title without a year gets no release date either, so both layouts agree.
        release = "01-Jan-1995" if title.endswith(")") else ""
        lines.append(f"{m.id}|{title}|{release}||http://imdb/x|{flags}")
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.data").write_text(
        "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in world.ratings), encoding="latin-1"
    )
    return folder


def write_ml1m(folder: Path, world: World, encoding: str = "latin-1") -> Path:
    """ml-1m's layout (``::`` fields); ``encoding="utf-8"`` writes it as ml-10m does."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for m in world.movies:
        # latin-1 has no en dash: ml-1m's titles have single years.
        title = m.title if encoding == "utf-8" else m.title.replace("(2006–2007)", "(2006)")
        lines.append(f"{m.id}::{title}::{'|'.join(m.genres) or '(no genres listed)'}\n")
    (folder / "movies.dat").write_bytes("".join(lines).encode(encoding))
    (folder / "ratings.dat").write_text(
        "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in world.ratings), encoding="ascii"
    )
    # ml-1m also ships users.dat (not read: the benchmark needs no demographics).
    (folder / "users.dat").write_text("1::F::1::10::48067\n", encoding="ascii")
    return folder
