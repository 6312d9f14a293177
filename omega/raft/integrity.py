"""Is ``state.mdb`` whole? Checked at open, in a child process; a damaged one is moved aside.

LMDB trusts its file: a damaged page is found only when a transaction touches it
(``MDB_CORRUPTED`` at some later apply), and a truncated file or a wild page
pointer can take the process down with SIGBUS/SIGSEGV. So before the replica opens
its store, ``check_store`` runs ``python -m omega.raft.integrity`` on it, which:

- reads every record of every database (every branch, leaf and overflow page
  reachable from the meta pages: LMDB checks each page's header as it goes);
- computes the state hash (``omega.raft.digest``) and the applied index, and
  compares them with the **seal** written at the last clean close
  (``state.seal``: applied index and hash). With a seal for the same index, a
  changed byte anywhere in a record is found, not only broken structure.

A crash of the child (a signal) or any LMDB error means damaged. A damaged store
is renamed to ``state.mdb.damaged-<time>`` (kept for the operator) and the replica
starts with an empty one: PySyncObj then loads the replica's own snapshot and
replays its journal, or the leader sends a snapshot, and the state converges to
the group's (the Raft journal, with the term and vote, is kept: forgetting a vote
could elect two leaders in one term). ``ReplicatedLmdb`` counts it in
``status()["store_rebuilt"]``.

Cost: one sequential read and SHA-256 of the file at every start, and the hash
again at a clean close (docs/raft.md has the figures for 1 M reports).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omega.raft.fsync import fsync_path

log = logging.getLogger("omega.raft")

SEAL_SUFFIX = ".seal"
#: Bytes per second the check reads at least (the timeout scales with the file).
_MIN_RATE = 20 * 1024 * 1024
_BASE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    applied_index: int = 0
    state_hash: str = ""
    records: int = 0
    seconds: float = 0.0


def seal_path(state: Path) -> Path:
    return state.with_name(state.stem + SEAL_SUFFIX)


def write_seal(state: Path, applied_index: int, digest: str) -> None:
    """Record the state's index and hash at a clean close (atomic, fsynced)."""
    target = seal_path(state)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"applied_index": applied_index, "state_hash": digest}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fsync_path(target.parent)


def _read_seal(state: Path) -> dict[str, object] | None:
    try:
        raw = json.loads(seal_path(state).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def verify(state: Path, databases: list[str]) -> Verdict:
    """Read the whole store in a child process (a crash there is a verdict, not ours)."""
    size = state.stat().st_size
    timeout = _BASE_TIMEOUT_S + size / _MIN_RATE
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "omega.raft.integrity", str(state), *databases],
            capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"reading the store took over {timeout:.0f} s")
    seconds = time.monotonic() - t0
    if done.returncode < 0:
        return Verdict(False, f"LMDB crashed reading it (signal {-done.returncode})",
                       seconds=seconds)
    try:
        out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Verdict(False, f"the check failed (exit {done.returncode}): "
                              f"{done.stderr.decode(errors='replace')[-300:]}", seconds=seconds)
    if not out.get("ok"):
        return Verdict(False, str(out.get("error")), seconds=seconds)
    verdict = Verdict(True, "", int(out["applied_index"]), str(out["state_hash"]),
                      int(out["records"]), seconds)
    seal = _read_seal(state)
    if seal is not None and seal.get("applied_index") == verdict.applied_index \
            and seal.get("state_hash") != verdict.state_hash:
        return Verdict(False, f"its records changed since the clean close at index "
                              f"{verdict.applied_index} (hash differs from the seal)",
                       verdict.applied_index, verdict.state_hash, verdict.records, seconds)
    return verdict


def check_store(state: Path, databases: list[str]) -> Verdict | None:
    """Verify ``state`` if it exists; move it aside if damaged. None: no store yet."""
    if not state.exists():
        seal_path(state).unlink(missing_ok=True)
        return None
    verdict = verify(state, databases)
    # The seal vouches for the file as it was closed; from here on it changes.
    seal_path(state).unlink(missing_ok=True)
    if verdict.ok:
        log.info("state store verified", extra={"fields": {
            "path": str(state), "applied_index": verdict.applied_index,
            "records": verdict.records, "seconds": round(verdict.seconds, 3)}})
        return verdict
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = state.with_name(f"{state.name}.damaged-{stamp}")
    os.replace(state, aside)
    lock = state.with_name(state.name + "-lock")
    lock.unlink(missing_ok=True)
    fsync_path(state.parent)
    log.error("state store is damaged: moved aside; this replica rebuilds it from its "
              "snapshot and journal, or from the leader's snapshot", extra={"fields": {
                  "path": str(state), "moved_to": str(aside), "reason": verdict.reason}})
    return verdict


def _main(argv: list[str]) -> int:
    """Child process: read everything, print one JSON line."""
    from omega.raft.kv import read_everything

    try:
        applied, digest, records = read_everything(Path(argv[0]), argv[1:])
    except Exception as exc:  # any failure to read it all is the verdict
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 3
    print(json.dumps({"ok": True, "applied_index": applied, "state_hash": digest,
                      "records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
