"""kill -9 at random points loses nothing that ``observe`` acknowledged.

A child process (brain_crash_child.py) streams observes with durability "sync"
and prints each one after ``observe`` returned. The parent reads the pipe until a
random number of acks, SIGKILLs the child mid-stream, and repeats a few times on
the same data directory; then it reopens the brain and checks every acknowledged
view is stored, in order, and that the brain still works (indexes rebuilt).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omega import Brain, ViewingEvent
from omega.brain.embedder import HashEmbedder
from omega.brain.settings import BrainSettings

CHILD = Path(__file__).with_name("brain_crash_child.py")
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000


def run_until_acks(data_dir: Path, start: int, seed: int, acks: int,
                   timeout_s: float = 60.0) -> list[tuple[int, str, int]]:
    """Start the child, read ``acks`` acknowledgements, SIGKILL it; return them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(start), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got: list[tuple[int, str, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == "ready", f"child failed: {first!r} {proc.stderr.read()!r}"
        while len(got) < acks:
            assert time.monotonic() < deadline, "child too slow"
            line = proc.stdout.readline()
            assert line.startswith("ack "), f"child said {line!r}: {proc.stderr.read()!r}"
            _, seq, cid, t = line.split()
            got.append((int(seq), cid, int(t)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            # Acks the child printed before it died but we had not read yet are
            # acknowledged too: count them, or the stored-count bound below is wrong.
            for line in proc.stdout.read().splitlines(keepends=True):
                parts = line.split()
                if line.endswith("\n") and len(parts) == 4 and parts[0] == "ack":
                    got.append((int(parts[1]), parts[2], int(parts[3])))
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return got


@pytest.mark.chaos
def test_sigkill_loses_no_acknowledged_observe(tmp_path: Path) -> None:
    rng = random.Random(20240)
    data_dir = tmp_path / "tv"
    acked: list[tuple[int, str, int]] = []
    start = T0
    for round_ in range(4):
        got = run_until_acks(data_dir, start, seed=round_, acks=rng.randint(5, 60))
        acked.extend(got)
        # A view committed but not yet printed may be stored up to 600 s later than
        # the last ack: start the next child past it (and past the 300 s tolerance).
        start = got[-1][2] + 1000
    with Brain.open(data_dir, BrainSettings(durability="sync"), embedder=HashEmbedder()) as b:
        stored = b.history(100_000)[::-1]  # oldest first
        by_key = {(e.content_id, int(e.timestamp)) for e in stored}
        missing = [a for a in acked if (a[1], a[2]) not in by_key]
        assert missing == []
        # At most one unacknowledged view per kill (committed, not yet printed).
        assert len(acked) <= len(stored) <= len(acked) + 4
        assert [int(e.timestamp) for e in stored] == sorted(int(e.timestamp) for e in stored)
        status = b.status()
        assert status["episodes"] == len(stored)
        assert 1 <= status["patterns"] <= len(stored)
        assert len(b.recommend(k=5, timestamp=acked[-1][2] + 2000)) == 5
        seq = b.observe(ViewingEvent("c1", 1.0, acked[-1][2] + 3000))
        assert seq == len(stored) + 1
