"""kill -9 of a TV at random points of its sync, 20 times, against a real 3-replica
shard group: no report lost or stored twice, no view reported twice or skipped.

The child (tests/integration/sync_crash_child.py) is the real sync code over the
real brain (with the fast embedder: the model is not what is tested here).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omega.federation.report import windowed_pairs
from tests.integration.shard_harness import cluster
from tests.integration.sync_crash_child import view
from tests.integration.sync_harness import HUB, real_reports

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

CHILD = Path(__file__).with_name("sync_crash_child.py")
KILLS = 20
VIEWS = 40


def test_kill_9_mid_sync_20_times_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(13)
    with cluster(tmp_path, launcher="runner") as c:
        c.start()
        cmd = [sys.executable, str(CHILD), "--brain", str(tmp_path / "brain"),
               "--endpoints", *c.endpoints, "--hub", HUB.public.hex(), "--views", str(VIEWS)]
        kills = 0
        deadline = time.monotonic() + 240
        while kills < KILLS:
            assert time.monotonic() < deadline, "kill loop overran its time"
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert child.stdout is not None
            # Let it get into its sync loop, then kill it at a random point.
            first = child.stdout.readline()
            assert first, "child exited before its first sync"
            if b"done" in first:
                child.wait(10)
                child.stdout.close()
                break
            # The kill point: a random moment of its sync, unless it exits before then.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(rng.uniform(0.0, 0.15))
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)
            child.wait(10)
            child.stdout.close()
            kills += 1
        # A last clean run drains everything.
        out = subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        last = json.loads(out.stdout.decode().strip().splitlines()[-1])
        assert last.get("done"), last
        built = int(last["built"])
        c.stop()
        views = [(view(k), 1.0 if k % 3 else 0.5) for k in range(VIEWS)]
        expected = len(windowed_pairs(views, 3))
        assert kills == KILLS
        assert built == expected  # every view's pairs built once: none skipped, none twice
        for node in c.nodes:
            off = node.offline()
            real, _ = real_reports(off.reports)
            assert real == built, (node.name, real, built)  # nothing lost
            assert set(off.reports.values()) == {1}  # nothing stored twice
