"""DurableJournal over PySyncObj's real FileJournal: what marks it dirty, what a sync does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal, MemoryJournal

from omega.raft.journal import DurableJournal

# PySyncObj reads an existing meta file without closing it (journal.MetaStorer.getMeta).
LEAKED_META = ("ignore:Exception ignored in.*raft.journal.meta"
               ":pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "raft.journal"


@pytest.fixture
def journal(path: Path) -> Iterator[Callable[[], FileJournal]]:
    """Opens PySyncObj's FileJournal at ``path``; every one opened is closed at the end."""
    opened: list[FileJournal] = []

    def open_one() -> FileJournal:
        opened.append(FileJournal(str(path)))
        return opened[-1]

    yield open_one
    for j in opened:
        j._destroy()


def test_starts_dirty_and_a_sync_cleans_it_once(path: Path, journal: Callable[[], FileJournal]
                                                ) -> None:
    j = DurableJournal(journal(), path)
    assert j.dirty  # entries may predate the wrapper
    j.sync()
    assert not j.dirty and j.syncs == 1
    j.sync()  # nothing changed: no second msync
    assert j.syncs == 1


@pytest.mark.parametrize("change", ["add", "clear", "delete_from", "delete_to"])
def test_every_change_of_the_log_marks_it_dirty(path: Path, change: str,
                                                journal: Callable[[], FileJournal]) -> None:
    j = DurableJournal(journal(), path)
    for i in range(1, 4):
        j.add(b"cmd%d" % i, i, 1)
    j.sync()
    {"add": lambda: j.add(b"cmd4", 4, 1), "clear": j.clear,
     "delete_from": lambda: j.deleteEntriesFrom(1),
     "delete_to": lambda: j.deleteEntriesTo(1)}[change]()
    assert j.dirty
    j.sync()
    assert not j.dirty and j.syncs == 2


@pytest.mark.filterwarnings(LEAKED_META)
def test_reads_pass_through_and_entries_survive_reopening(
        path: Path, journal: Callable[[], FileJournal]) -> None:
    j = DurableJournal(journal(), path)
    for i in range(1, 6):
        j.add(b"cmd%d" % i, i, 2)
    j.deleteEntriesFrom(3)
    j.sync()
    assert len(j) == 3 and j[0] == (b"cmd1", 1, 2) and j[-1] == (b"cmd3", 3, 2)
    assert [e[1] for e in j[1:]] == [2, 3]
    assert [e[1] for e in journal()[:]] == [1, 2, 3]


@pytest.mark.filterwarnings(LEAKED_META)
def test_a_term_and_vote_are_stored_and_synced_at_once(
        path: Path, journal: Callable[[], FileJournal]) -> None:
    j = DurableJournal(journal(), path)
    j.sync()
    j.setCurrentTerm(7, "127.0.0.1:7001")
    assert j.syncs == 2  # the meta file and its directory, without waiting for a send
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (7, "127.0.0.1:7001")
    again = journal()
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (7, "127.0.0.1:7001")


def test_a_memory_journal_has_nothing_to_sync(path: Path) -> None:
    j = DurableJournal(MemoryJournal(), path)
    j.add(b"x", 1, 1)
    j.sync()  # no flush method: only the flag is cleared
    assert not j.dirty and len(j) == 1
