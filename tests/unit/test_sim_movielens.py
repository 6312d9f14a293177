"""Loading every MovieLens layout and the protocol's leave-last-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omega.errors import OmegaError
from omega.sim.movielens import (
    LAYOUT_FILES,
    DatasetError,
    Item,
    Layout,
    MovieLens,
    detect_layout,
    item_text,
    load_movielens,
    read_ratings,
    split_leave_last,
    split_title,
    watch_fraction,
)
from tests.helpers_sim import World, make_world, write_ml1m, write_ml100k, write_ml_latest


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture
def latest(tmp_path: Path, world: World) -> Path:
    return write_ml_latest(tmp_path / "ml-latest-small", world)


@pytest.fixture
def ml100k(tmp_path: Path, world: World) -> Path:
    return write_ml100k(tmp_path / "ml-100k", world)


def test_item_text_has_the_exact_form() -> None:
    assert item_text("Heat", 1995, ("Action", "Crime", "Thriller")) == (
        "Heat (1995). Genres: Action, Crime, Thriller"
    )
    assert item_text("Babylon 5", None, ("Sci-Fi",)) == "Babylon 5. Genres: Sci-Fi"
    assert item_text("Hyena Road", None, ()) == "Hyena Road"
    assert Item(6, "Heat", 1995, ("Action",)).text == "Heat (1995). Genres: Action"


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Heat (1995)", "Heat", 1995),
        ("American President, The (1995)", "American President, The", 1995),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
         "City of Lost Children, The (Cité des enfants perdus, La)", 1995),
        ("From Dusk Till Dawn 2: Texas Blood Money (1999) ",
         "From Dusk Till Dawn 2: Texas Blood Money", 1999),
        ("Death Note: Desu nôto (2006–2007)", "Death Note: Desu nôto", 2006),
        ("Babylon 5", "Babylon 5", None),
    ],
)  # fmt: skip
def test_split_title(raw: str, title: str, year: int | None) -> None:
    assert split_title(raw) == (title, year)


def test_detects_each_layout(latest: Path, ml100k: Path) -> None:
    assert detect_layout(latest) == "ml-latest"
    assert detect_layout(ml100k) == "ml-100k"


def test_both_layouts_load_the_same_data(latest: Path, ml100k: Path, world: World) -> None:
    a, b = load_movielens(latest), load_movielens(ml100k)
    assert a.layout == "ml-latest" and b.layout == "ml-100k"
    assert a.items == b.items
    assert a.texts() == b.texts()
    order_a = np.lexsort((a.timestamps, a.users))
    order_b = np.lexsort((b.timestamps, b.users))
    for field in ("users", "item_index", "ratings", "timestamps"):
        assert np.array_equal(getattr(a, field)[order_a], getattr(b, field)[order_b]), field
    assert a.n_interactions == len(world.ratings)


def test_catalog_is_every_rated_item_with_parsed_metadata(latest: Path, world: World) -> None:
    data = load_movielens(latest)
    rated = sorted({item for _, item, _, _ in world.ratings})
    assert [item.id for item in data.items] == rated
    by_id = {item.id: item for item in data.items}
    if 6 in by_id:
        assert by_id[6].text == "Heat (1995). Genres: Action, Crime, Thriller"
    if 11 in by_id:
        assert by_id[11].title == "American President, The"
    if 171749 in by_id:
        assert by_id[171749] == Item(171749, "Death Note: Desu nôto", 2006, ())
    # Interactions point at the catalog positions of their items.
    pos = {item.id: i for i, item in enumerate(data.items)}
    first = world.ratings[0]
    hit = np.flatnonzero((data.users == first[0]) & (data.timestamps == first[3]))
    assert data.item_index[hit[0]] == pos[first[1]]


def test_specials_are_in_the_catalog(latest: Path) -> None:
    # make_world gives every user one special title; all five must be rated by someone.
    ids = {item.id for item in load_movielens(latest).items}
    assert {6, 11, 40697, 171749, 500} <= ids


def test_ml100k_latin1_titles_and_genre_flags(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    folder.mkdir()
    flags = ["0"] * 19
    flags[4] = flags[5] = "1"  # Children's, Comedy
    (folder / "u.item").write_bytes(
        (
            f"1|Café au lait (1993)|01-Jan-1993||http://x|{'|'.join(flags)}\n"
            f"2|Untitled|14-Mar-1997||http://x|{'|'.join(['1'] + ['0'] * 18)}\n"
        ).encode("latin-1")
    )
    (folder / "u.data").write_text("7\t1\t5\t100\n7\t2\t3\t200\n", encoding="latin-1")
    data = load_movielens(folder)
    assert data.items[0] == Item(1, "Café au lait", 1993, ("Children's", "Comedy"))
    # No year in the title: the release date's year is used.
    assert data.items[1] == Item(2, "Untitled", 1997, ("unknown",))
    assert data.texts()[0] == "Café au lait (1993). Genres: Children's, Comedy"


def test_folder_without_movielens_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no MovieLens data") as err:
        load_movielens(tmp_path)
    assert isinstance(err.value, OmegaError)
    with pytest.raises(DatasetError, match="not a folder"):
        load_movielens(tmp_path / "notes.txt")
    with pytest.raises(DatasetError, match="not a folder"):
        load_movielens(tmp_path / "missing")


def test_malformed_files_name_file_and_line(latest: Path) -> None:
    ratings = latest / "ratings.csv"
    lines = ratings.read_text().splitlines()
    ratings.write_text("\n".join([*lines[:3], "1,6,four,100", *lines[3:]]) + "\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv: line 4: rating 'four'"):
        load_movielens(latest)
    ratings.write_text("user,item,rating,time\n1,6,4.0,100\n")
    with pytest.raises(DatasetError, match="header"):
        load_movielens(latest)


def test_rated_item_without_metadata_is_refused(latest: Path) -> None:
    with (latest / "ratings.csv").open("a") as fh:
        fh.write("1,999999,4.0,5\n")
    with pytest.raises(DatasetError, match="999999"):
        load_movielens(latest)


def test_non_latin1_ml100k_and_bad_flags_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t1\n")
    (folder / "u.item").write_text("1|A (1990)|||x|" + "|".join(["2"] * 19) + "\n")
    with pytest.raises(DatasetError, match="genre flags"):
        load_movielens(folder)
    (folder / "u.item").write_text("1|A (1990)|||x|0|1\n")
    with pytest.raises(DatasetError, match="fields"):
        load_movielens(folder)


def test_watch_fraction_mapping() -> None:
    assert watch_fraction(4.0) == 0.95
    assert watch_fraction(5.0) == 0.95
    assert watch_fraction(3.5) == 0.3
    assert watch_fraction(0.5) == 0.3


def _write_ratings(folder: Path, rows: list[tuple[int, int, float, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids = sorted({r[1] for r in rows})
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},M{i} (2000),Drama\n" for i in ids)
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    )
    return folder


def test_split_sorts_by_time_and_holds_out_the_last_two(tmp_path: Path) -> None:
    rows = [
        (1, 30, 4.0, 500),  # test (latest)
        (1, 20, 3.0, 100),
        (1, 10, 5.0, 100),  # same time as item 20: the seeded order puts 10 first
        (1, 40, 4.5, 300),  # validation
        (1, 50, 1.0, 200),
        (1, 60, 4.0, 150),
        (2, 10, 4.0, 1),  # user 2: four interactions, dropped
        (2, 20, 4.0, 2),
        (2, 30, 4.0, 3),
        (2, 40, 4.0, 4),
    ]
    data = load_movielens(_write_ratings(tmp_path / "d", rows))
    split = split_leave_last(data)
    assert split.dropped_users == 1
    assert [u.user_id for u in split.users] == [1]
    user = split.users[0]
    ids = [data.items[i].id for i in user.items]
    assert ids == [10, 20, 60, 50, 40, 30]
    assert [data.items[i].id for i in user.train] == [10, 20, 60, 50]
    assert data.items[user.val_item].id == 40
    assert data.items[user.test_item].id == 30
    assert user.fractions.tolist() == [0.95, 0.3, 0.95, 0.3, 0.95, 0.95]
    assert user.timestamps.tolist() == [100, 100, 150, 200, 300, 500]
    assert [data.items[i].id for i in user.cold_history] == [10, 20, 60, 50, 40]
    assert data.items[user.cold_item].id == 30
    # The catalog keeps items only the dropped user rated (none here) and the matrix
    # holds training items only.
    x = split.train_matrix()
    assert x.shape == (1, data.n_items)
    assert sorted(np.flatnonzero(x[0]).tolist()) == sorted(user.train.tolist())


def test_ties_within_a_second_follow_a_seeded_random_order_not_the_ids(tmp_path: Path) -> None:
    # 200 users, each ending in a burst of 3 titles rated in the same second.
    rows = []
    for u in range(1, 201):
        rows += [(u, i, 4.0, i) for i in range(1, 6)]
        rows += [(u, i, 4.0, 1000) for i in (101, 102, 103)]
    folder = _write_ratings(tmp_path / "d", rows)
    split = split_leave_last(load_movielens(folder))
    data = load_movielens(folder)
    last = [data.items[u.test_item].id for u in split.users]
    # Each title of the burst is the test item for about a third of the users.
    for item in (101, 102, 103):
        assert 40 <= last.count(item) <= 95, (item, last.count(item))
    # The same seed gives the same order, whatever the order of the file's lines.
    rows.reverse()
    again = split_leave_last(load_movielens(_write_ratings(tmp_path / "e", rows)))
    assert [u.items.tolist() for u in again.users] == [u.items.tolist() for u in split.users]
    other = split_leave_last(data, tie_seed=7)
    assert [u.items.tolist() for u in other.users] != [u.items.tolist() for u in split.users]


def test_split_keeps_the_first_of_repeated_views(tmp_path: Path) -> None:
    rows = [(1, i, 4.0, 10 * i) for i in range(1, 7)] + [(1, 2, 5.0, 999)]
    data = load_movielens(_write_ratings(tmp_path / "d", rows))
    user = split_leave_last(data).users[0]
    assert [data.items[i].id for i in user.items] == [1, 2, 3, 4, 5, 6]


def test_cold_start_needs_a_sixth_interaction(tmp_path: Path) -> None:
    rows = [(1, i, 4.0, i) for i in range(1, 6)] + [(2, i, 4.0, i) for i in range(1, 8)]
    split = split_leave_last(load_movielens(_write_ratings(tmp_path / "d", rows)))
    assert [u.has_cold for u in split.users] == [False, True]
    assert split.cold_users() == [1]


# -- ml-1m / ml-10m (ratings.dat + movies.dat) ----------------------------------------------


def _sorted_rows(data: MovieLens) -> list[tuple[int, int, float, int]]:
    ids = [data.items[i].id for i in data.item_index]
    return sorted(zip(data.users.tolist(), ids, data.ratings.tolist(),
                      data.timestamps.tolist(), strict=True))


def test_ml1m_layout_loads_the_same_data_as_ml_latest(tmp_path: Path, world: World,
                                                      latest: Path) -> None:
    # ml-10m writes UTF-8, so even the en dash of a year range survives.
    ml10m = write_ml1m(tmp_path / "ml-10M100K", world, encoding="utf-8")
    assert detect_layout(ml10m) == "ml-1m"
    a, b = load_movielens(latest), load_movielens(ml10m)
    assert b.layout == "ml-1m"
    assert b.items == a.items
    assert _sorted_rows(b) == _sorted_rows(a)
    first_b, first_a = split_leave_last(b).users[0], split_leave_last(a).users[0]
    assert first_b.items.tolist() == first_a.items.tolist()


def test_ml1m_latin1_titles(tmp_path: Path, world: World) -> None:
    data = load_movielens(write_ml1m(tmp_path / "ml-1m", world))
    by_id = {item.id: item for item in data.items}
    assert by_id[500] == Item(500, "Café Lumière", 2003, ("Drama",))
    assert by_id[171749] == Item(171749, "Death Note: Desu nôto", 2006, ())
    assert by_id[6].text == "Heat (1995). Genres: Action, Crime, Thriller"


def test_ml10m_half_stars_and_a_title_holding_the_separator(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "movies.dat").write_text(
        "1::Toy Story (1995)::Adventure|Animation|Children\n"
        "2::Star Trek: 2::1 (1999)::Sci-Fi\n", encoding="utf-8")
    (folder / "ratings.dat").write_text("1::1::4.5::100\r\n1::2::0.5::200\r\n\r\n")
    data = load_movielens(folder)
    assert data.ratings.tolist() == [4.5, 0.5]
    assert data.timestamps.tolist() == [100, 200]
    assert data.items[1] == Item(2, "Star Trek: 2::1", 1999, ("Sci-Fi",))
    assert watch_fraction(float(data.ratings[0])) == 0.95


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("7::6::4", r"ratings\.dat: line 3: expected 4 fields, got 3"),
        ("7::6::four::100", r"ratings\.dat: line 3: rating 'four' is not a number"),
        ("7.5::6::4::100", r"ratings\.dat: line 3: user '7\.5' is not an integer"),
        ("7::6::nan::100", r"ratings\.dat: line 3: rating 'nan' is not finite"),
        ("7::6::4::100::1", r"ratings\.dat: line 3: expected 4 fields, got 5"),
        ("7,6,4,100", r"ratings\.dat: line 3: expected 4 fields, got 1"),
    ],
)
def test_malformed_ratings_dat_names_file_and_line(tmp_path: Path, world: World, line: str,
                                                   message: str) -> None:
    folder = write_ml1m(tmp_path / "ml-1m", world)
    rows = (folder / "ratings.dat").read_text().splitlines()
    (folder / "ratings.dat").write_text("\n".join([*rows[:2], line, *rows[2:]]) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_movielens(folder)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("12::No genres field (1990)", r"movies\.dat: line 2: expected MovieID::Title::Genres"),
        ("x::A (1990)::Drama", r"movies\.dat: line 2: MovieID 'x' is not an integer"),
        ("12::::Drama", r"movies\.dat: line 2: empty title"),
    ],
)
def test_malformed_movies_dat_names_file_and_line(tmp_path: Path, world: World, line: str,
                                                  message: str) -> None:
    folder = write_ml1m(tmp_path / "ml-1m", world)
    rows = (folder / "movies.dat").read_bytes().decode("latin-1").splitlines()
    text = "\n".join([rows[0], line, *rows[1:]]) + "\n"
    (folder / "movies.dat").write_bytes(text.encode("latin-1"))
    with pytest.raises(DatasetError, match=message):
        load_movielens(folder)


@pytest.mark.parametrize("layout", ["ml-latest", "ml-100k", "ml-1m"])
def test_ratings_read_in_small_blocks_match_one_block(tmp_path: Path, world: World,
                                                      layout: Layout) -> None:
    writer = {"ml-latest": write_ml_latest, "ml-100k": write_ml100k, "ml-1m": write_ml1m}[layout]
    folder = writer(tmp_path / layout, world)
    path = folder / LAYOUT_FILES[layout][0]
    whole = read_ratings(path, layout)
    for block in (1, 37, 4096):  # lines cut across blocks, and one line per block
        parts = read_ratings(path, layout, block=block)
        for x, y in zip(whole, parts, strict=True):
            assert np.array_equal(x, y), block
    assert len(whole[0]) == len(world.ratings)
    # A bad line far into the file is named by its own line number, whatever the block.
    lines = path.read_text(encoding="latin-1").splitlines()
    sep = {"ml-latest": ",", "ml-100k": "\t", "ml-1m": "::"}[layout]
    lines[150] = sep.join(["3", "6", "x", "9"])
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    for block in (64, 1 << 20):
        with pytest.raises(DatasetError, match=r"line 151: rating 'x' is not a number"):
            read_ratings(path, layout, block=block)


def test_u_data_separated_by_spaces_is_still_read(tmp_path: Path, world: World) -> None:
    folder = write_ml100k(tmp_path / "ml-100k", world)
    text = (folder / "u.data").read_text().replace("\t", "  ")
    (folder / "u.data").write_text(text)
    assert load_movielens(folder).n_interactions == len(world.ratings)


def test_the_one_movielens_subfolder_of_a_folder_is_read(tmp_path: Path, world: World) -> None:
    parent = tmp_path / "unzipped"
    inner = write_ml1m(parent / "ml-1m", world)
    (parent / "notes").mkdir()  # other subfolders do not count
    (parent / "README.txt").write_text("MovieLens 1M")
    data = load_movielens(parent)
    assert data.path == inner and data.layout == "ml-1m"
    write_ml_latest(parent / "ml-latest-small", world)
    with pytest.raises(DatasetError, match=r"several MovieLens folders inside: "
                                           r"ml-1m \(ml-1m\), ml-latest-small \(ml-latest\)"):
        load_movielens(parent)
