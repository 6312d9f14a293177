"""Everything a TV sends over a simulated week, recorded frame by frame (the real
brain, sync cycle, device client and shard service; omega.sim.tvweek):

- no title, content id, title key, view timestamp or watch fraction in clear, and
  nothing but sealed reports of one size inside the pushes;
- the number and size of frames do not depend on what (or how much) was watched.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from omega.federation.report import REPORT_BYTES, title_key
from omega.protocol import Heartbeat, Pull, Push, decode
from omega.sim.tvweek import WeekResult, simulate_week

pytestmark = [pytest.mark.slow]

CATALOG = [f"film-{i:04d}" for i in range(300)]
WATCH_COUNTS = (0, 8, 30, 70)


def _views(n: int, offset: int) -> list[tuple[str, float]]:
    return [(CATALOG[(offset + 17 * i) % len(CATALOG)], 0.95 if i % 3 else 0.42)
            for i in range(n)]


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> list[WeekResult]:
    out = []
    for j, n in enumerate(WATCH_COUNTS):
        root: Path = tmp_path_factory.mktemp(f"tv{j}")
        out.append(simulate_week(root / "brain", _views(n, j * 7), CATALOG,
                                 device_id=f"tv-{j:04d}", seed=j, heartbeat_s=3600.0))
    return out


def _needles(week: WeekResult) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for cid, frac, ts in week.views:
        out.append(("content id", cid.encode()))
        out.append(("title", f"Title {cid}".encode()))
        out.append(("title key", title_key(cid).to_bytes(8, "big")))
        out.append(("title key", title_key(cid).to_bytes(8, "little")))
        for t in (int(ts), int(ts * 1000)):
            out.append(("timestamp", struct.pack(">Q", t)))
            out.append(("timestamp", struct.pack(">I", t & 0xFFFFFFFF)))
            out.append(("timestamp", str(t).encode()))
        out.append(("timestamp", struct.pack(">d", ts)))
        out.append(("watch fraction", struct.pack(">d", frac)))
        out.append(("watch fraction", struct.pack("<f", frac)))
    return out


def _outside_reports(frame: bytes) -> bytes:
    """The frame with its sealed reports cut out: what is readable without a key."""
    msg = decode(frame)
    if isinstance(msg, Push):
        for r in msg.reports:
            frame = frame.replace(r, b"", 1)
    return frame


def test_nothing_of_the_viewing_leaves_the_tv_in_clear(weeks: list[WeekResult]) -> None:
    for week in weeks:
        sent = b"".join(f.sent for f in week.frames)
        clear = b"".join(_outside_reports(f.sent) for f in week.frames)
        assert week.frames
        for what, needle in _needles(week):
            # A week is ~1 MB of ciphertext: a 4-byte needle turns up in it by chance
            # (~5 % a run), so short needles are looked for outside the sealed reports.
            haystack = sent if len(needle) >= 8 else clear
            assert needle not in haystack, f"{week.device_id}: a {what} in clear: {needle!r}"
        for f in week.frames:
            msg = decode(f.sent)
            assert isinstance(msg, Push | Pull | Heartbeat)
            if isinstance(msg, Push):
                assert len(msg.reports) == 8
                assert {len(r) for r in msg.reports} == {REPORT_BYTES}
            if isinstance(msg, Pull):
                assert msg.want == ()  # asks for nothing by name


def test_frame_count_and_size_do_not_depend_on_the_viewing(weeks: list[WeekResult]) -> None:
    views = np.array([len(w.views) for w in weeks], dtype=float)
    pushes = np.array([sum(isinstance(decode(f.sent), Push) for f in w.frames) for w in weeks],
                      dtype=float)
    push_sizes = {len(f.sent) for w in weeks for f in w.frames
                  if isinstance(decode(f.sent), Push)}
    sent = np.array([sum(len(f.sent) for f in w.frames) for w in weeks], dtype=float)
    real = [w.status["reports_pushed"] for w in weeks]
    assert real[0] == 0 and real[-1] > 50  # the TVs did contribute very differently
    assert len(push_sizes) == 1  # every push of every TV has the same size
    # Counts vary only by the schedule's jitter: within 2 % of each other.
    assert pushes.max() - pushes.min() <= 0.02 * pushes.mean()
    assert sent.max() - sent.min() <= 0.02 * sent.mean()
    if np.std(pushes) > 0:
        assert abs(float(np.corrcoef(views, pushes)[0, 1])) < 0.9
