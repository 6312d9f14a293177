"""``SyncCore``: one TV's push/pull cycle against its shard, over the brain's durable state.

Plain code, driven by ``omega.actors.sync.SyncAgent`` (and by tests directly).
Everything the cycle must not lose or repeat lives in the brain's LMDB (its sync
state and outbound queue), written *before* the step it protects:

- **build**: the pairs due become sealed reports in the outbound queue. The new
  counters (views reported, the day's budget) and the sealed blobs are written
  first as one record (``sync.contrib``); then each blob not yet queued is queued;
  then the record's blob list is cleared. A crash anywhere resumes the same build
  (``recover``), so a view is never reported twice nor skipped.
- **push**: the push — its sequence number, the queue position it covers and its
  exact reports (real ones from the queue, then sealed dummies to a constant count)
  — is written (``sync.push``) before it is sent; a retry, also after a restart,
  sends the same sequence number with the same reports, which the shard applies
  once. Only the shard's ack acks the queue.
- **pull**: at most every ``crowd_refresh_s`` (and at every sync while a delta is
  unfinished): the delta since the merged version, checked whole before anything is
  merged (``check_pull``): a hostile or broken answer is a typed ``PullRejected``
  and the brain is unchanged. New content goes into the catalog with its embedding,
  then the crowd lists with the version (one transaction each; a crash between
  them re-pulls the same delta, and re-adding content is a no-op).
- **the hub's key**: a pull names the hub's current report key with the hub's
  signature over it; the TV adopts a newer key only if the signature verifies with
  its provisioned verify key (``keysign.accept_announcement``). A refused
  announcement never refuses the pull: the lists merge, the TV keeps its key, logs
  one warning per distinct announcement and counts it in its status.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import numpy as np

from omega.brain.api import Brain, Content
from omega.brain.crowd import check_crowd_update
from omega.brain.errors import BrainError
from omega.errors import OmegaError
from omega.federation.keysign import (
    AnnouncementError,
    StaleAnnouncement,
    accept_announcement,
    verify_announcement,
)
from omega.federation.report import HubKey, Randomizer, title_key
from omega.protocol import HeartbeatAck, PullResp, PushAck, RateLimited
from omega.protocol.vectors import embedding_from_wire
from omega.sync import accountant as acct
from omega.sync.contrib import Budget, choose, day_of, due_pairs, fill, seal_reports, view_weight
from omega.sync.errors import (
    PullRejected,
    RejectedCrowd,
    StalePull,
    UnknownPullVersion,
    WrongDimensions,
)
from omega.sync.schedule import Backoff, Schedule
from omega.sync.settings import ShardGroup, SyncSettings
from omega.sync.shardmap import pick

__all__ = ["ShardLink", "SyncCore", "SyncOutcome", "check_pull"]

log = logging.getLogger("omega.sync")

K_CONTRIB = "sync.contrib"
K_PUSH = "sync.push"
K_HUB = "sync.hub_key"
K_INFO = "sync.info"
K_LEDGER = "sync.ledger"
#: New views a build reads at most.
MAX_NEW_VIEWS = 500


class ShardLink(Protocol):
    """What the cycle needs from a shard group (``DeviceLink`` over ``DeviceClient``)."""

    def push(self, seq: int, reports: Sequence[bytes]) -> PushAck: ...

    def pull(self, since_version: int, region: str) -> PullResp: ...

    def heartbeat(self) -> HeartbeatAck: ...

    def close(self) -> None: ...


def _pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def _unpack(raw: bytes | None, default: Any) -> Any:
    if raw is None:
        return default
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


@dataclass(frozen=True)
class SyncOutcome:
    """What one sync did."""

    built: int = 0
    pushed: int = 0          # real reports acknowledged
    push_seq: int = 0
    pulls: int = 0
    version: int = 0
    error: str = ""
    retry_in_s: float = 0.0


def check_pull(resp: PullResp, applied: int, announced: int, dim: int
               ) -> tuple[dict[str, np.ndarray], Any]:
    """Check a pull whole before anything is merged; returns (new vectors, crowd write).

    ``applied``: the version the brain merged; ``announced``: the newest version the
    shard announced to this TV (in a push ack or heartbeat ack) — a response beyond
    it is a version nobody told us about.
    """
    v = resp.global_version
    if v < applied:
        raise StalePull(f"pull version {v} is older than the merged version {applied}")
    if v > announced:
        raise UnknownPullVersion(f"pull version {v} was never announced (newest known "
                                 f"{announced})")
    vectors: dict[str, np.ndarray] = {}
    for item in resp.new_content:
        vec = embedding_from_wire(item.embedding)
        if vec.shape != (dim,):
            raise WrongDimensions(f"new content {item.id}: {vec.shape[0]} dims, the brain "
                                  f"has {dim}")
        if not np.isfinite(vec).all() or not vec.any():
            raise WrongDimensions(f"new content {item.id}: embedding not finite or all zero")
        vectors[item.id] = vec
    try:
        write = check_crowd_update(dict(resp.neighbours), dict(resp.popularity),
                                   list(resp.trends), v, applied)
    except BrainError as exc:
        raise RejectedCrowd(f"crowd lists refused: {exc}") from exc
    return vectors, write


class SyncCore:
    """The sync cycle of one TV. Not thread-safe: one caller (the agent's thread)."""

    def __init__(self, brain: Brain, settings: SyncSettings,
                 connect: Callable[[ShardGroup], ShardLink], *,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.brain = brain
        self.settings = settings
        self._connect = connect
        self._wall = wall
        self._mono = mono
        self._rng = rng or random.SystemRandom()
        self._randomizer = Randomizer(settings.keep)
        self._keys: list[int] = []
        self._link: ShardLink | None = None
        self._announced = 0
        self._pull_at = 0.0  # monotonic: when the next pull is due (see crowd_refresh_s)
        self._verify = bytes.fromhex(settings.hub_verify_key) if settings.hub_verify_key \
            else None
        #: The stored key whose signature last verified (checked once per process).
        self._verified: tuple[int, bytes, bytes] | None = None
        #: Refused announcements already logged: one warning each, not one per pull.
        self._warned: set[tuple[int, bytes, bytes, str]] = set()
        self.last_push_real = 0
        groups = settings.all_groups()
        self.group = pick(groups, settings.device_id, settings.region) if groups else None
        self.schedule = Schedule(settings.interval, settings.jitter, settings.heartbeat_s,
                                 Backoff(settings.backoff_base_s, settings.backoff_max_s,
                                         random.Random(self._rng.random())),
                                 mono(), random.Random(self._rng.random()))
        self.recover()

    # -- the hub's key -------------------------------------------------------------

    def hub_key(self) -> HubKey | None:
        """The key reports are sealed to: the provisioned one, or a newer one a pull
        announced whose signature verifies with the provisioned verify key. A stored
        key that does not verify (stored unsigned by an older version, or no verify
        key now) is not used."""
        s = self.settings
        best = HubKey(s.hub_key_id, bytes.fromhex(s.hub_public_key)) if s.hub_public_key else None
        got = _unpack(self.brain.sync_state(K_HUB), None)
        if got and (best is None or int(got[0]) > best.key_id):
            stored = (int(got[0]), bytes(got[1]), bytes(got[2]) if len(got) > 2 else b"")
            if self._stored_ok(stored):
                best = HubKey(stored[0], stored[1])
        return best

    def _stored_ok(self, stored: tuple[int, bytes, bytes]) -> bool:
        if stored == self._verified:
            return True
        if self._verify is None:
            return False
        try:
            verify_announcement(self._verify, *stored)
        except AnnouncementError:
            return False
        self._verified = stored
        return True

    # -- build ---------------------------------------------------------------------

    def recover(self) -> None:
        """Finish a build a crash interrupted: queue its blobs that are not queued yet."""
        contrib = _unpack(self.brain.sync_state(K_CONTRIB), None)
        if not contrib or not contrib.get("blobs"):
            return
        queued = {p for _, p in self.brain.peek_outbound(self.settings.max_queue + 64)}
        for blob in contrib["blobs"]:
            if bytes(blob) not in queued:
                self.brain.enqueue_outbound(bytes(blob))
        contrib["blobs"] = []
        self.brain.set_sync_state(K_CONTRIB, _pack(contrib))

    def _catalog_keys(self) -> list[int]:
        ids = self.brain.content_ids()
        if len(ids) != len(self._keys):
            self._keys = [title_key(c) for c in ids]
        return self._keys

    def queued(self) -> int:
        return len(self.brain.peek_outbound(self.settings.max_queue + 64))

    def build(self) -> int:
        """Seal the pairs due into the outbound queue; returns how many were queued."""
        self.recover()
        s = self.settings
        hub = self.hub_key()
        if hub is None:
            return 0  # nothing can be sealed yet: the views wait, unreported
        contrib = _unpack(self.brain.sync_state(K_CONTRIB), {})
        done = int(contrib.get("views", 0))
        total = int(self.brain.status()["episodes"])
        if total <= done:
            return 0
        # Views older than the last few hundred (a TV that enabled sync late) are
        # marked reported unread: the day's budget could not take their pairs anyway.
        new = min(total - done, MAX_NEW_VIEWS)
        events = list(reversed(self.brain.history(new + s.window)))
        bs = self.brain.settings
        views = [(e.content_id, view_weight(e.watch_fraction, bs.success_threshold,
                                            bs.abandoned_weight)) for e in events]
        pairs = due_pairs(views, min(new, len(views)), s.window)
        today = day_of(self._wall())
        budget = Budget(int(contrib.get("day", 0)), int(contrib.get("used", 0)))
        room = min(budget.room(today, s.daily_budget), max(0, s.max_queue - self.queued()))
        chosen = choose(pairs, room)
        keys = self._catalog_keys()
        blobs = seal_reports(chosen, keys, self._randomizer, hub, self._rng) if len(keys) > 1 \
            else []
        budget = budget.spend(today, len(blobs))
        built_total = int(contrib.get("built", 0)) + len(blobs)
        # One record first: the build is decided (counters and blobs) before it is queued.
        self.brain.set_sync_state(K_CONTRIB, _pack({
            "views": total, "day": budget.day, "used": budget.used, "built": built_total,
            "blobs": blobs}))
        if blobs:
            cost = acct.report_privacy(self._randomizer.epsilon(len(keys)), s.k_anonymity,
                                       s.delta)
            ledger = self._ledger()
            ledger = acct.add_reports(ledger, today, len(blobs), cost)
            self.brain.set_sync_state(K_LEDGER, _pack([e.to_json() for e in ledger.values()]))
        self.recover()
        return len(blobs)

    def _ledger(self) -> dict[int, acct.DayEntry]:
        rows = _unpack(self.brain.sync_state(K_LEDGER), [])
        return {int(r[0]): acct.DayEntry.from_json(r) for r in rows}

    # -- push ----------------------------------------------------------------------

    def _link_now(self) -> ShardLink:
        if self.group is None:
            from omega.sync.shardmap import NoShardGroup

            raise NoShardGroup(self.settings.region)
        if self._link is None:
            self._link = self._connect(self.group)
        return self._link

    def push(self) -> PushAck | None:
        """Send the pending push, or make one; returns the shard's ack.

        The queue's entries are matched by content, not by their sequence numbers:
        the brain numbers a queue that ran empty from 1 again, so a number alone
        cannot say whether an entry belongs to a push made before a crash.
        """
        s = self.settings
        hub = self.hub_key()
        state = _unpack(self.brain.sync_state(K_PUSH), {"last": 0, "pending": None})
        pending = state.get("pending")
        queue = self.brain.peek_outbound(s.reports_per_push)
        if pending and pending["real"]:
            mine = {bytes(r) for r in pending["real"]}
            if not any(p in mine for _, p in queue):
                pending = None  # its reports left the queue: the shard acked it already
        if pending is None:
            if hub is None:
                return None  # no key to seal even a dummy with
            real = [p for _, p in queue]
            seq = max(int(state["last"]) + 1, int(self._wall() * 1_000_000))
            pending = {"seq": seq, "real": real,
                       "reports": fill(real, s.reports_per_push, hub, self._rng)}
            state = {"last": seq, "pending": pending}
            self.brain.set_sync_state(K_PUSH, _pack(state))  # before it leaves
        ack = self._link_now().push(int(pending["seq"]), [bytes(r) for r in pending["reports"]])
        self._announced = max(self._announced, ack.global_version)
        mine = {bytes(r) for r in pending["real"]}
        # The push took the oldest entries, so its own are the queue's first ones.
        done = [q for q, p in self.brain.peek_outbound(s.reports_per_push) if p in mine]
        if done:
            self.brain.ack_outbound(max(done))
        self.brain.set_sync_state(K_PUSH, _pack({"last": state["last"], "pending": None}))
        self.last_push_real = len(pending["real"])
        self._info(last_push=self._wall(), last_push_seq=int(pending["seq"]),
                   pushed_real=self._get_info().get("pushed_real", 0) + len(pending["real"]))
        return ack

    # -- pull ----------------------------------------------------------------------

    def applied_version(self) -> int:
        return int(self.brain.status()["crowd_version"])

    def pull(self, ask_version: bool = True) -> int:
        """Pull until the announced version is merged; returns the number of pulls.

        ``ask_version``: learn the shard's version by a heartbeat first (not needed
        right after a push: its ack says it).
        """
        link = self._link_now()
        if ask_version and self._announced <= self.applied_version():
            self._announced = max(self._announced, link.heartbeat().global_version)
        rounds = 0
        while rounds < self.settings.pull_max_rounds:
            applied = self.applied_version()
            if applied >= self._announced:
                break
            resp = link.pull(applied, self.settings.region)
            rounds += 1
            self.merge(resp)
            if resp.global_version <= applied:
                break  # no progress: the shard has nothing newer to give now
        if self.applied_version() >= self._announced:
            # Up to date: the next pull after the refresh period (unfinished: next sync).
            self._pull_at = self._mono() + self.settings.crowd_refresh_s
        self._info(last_pull=self._wall(), pulls=self._get_info().get("pulls", 0) + rounds)
        return rounds

    def announce(self, version: int) -> None:
        """The shard said it holds ``version`` (an ack); pulls may bring the TV up to it."""
        self._announced = max(self._announced, version)

    def merge(self, resp: PullResp) -> None:
        """Check the whole response, then merge it (``PullRejected``: nothing merged)."""
        applied = self.applied_version()
        vectors, _ = check_pull(resp, applied, self._announced, self.brain.embedder.dim)
        if resp.new_content:
            known = set(self.brain.content_ids())
            fresh = [c for c in resp.new_content if c.id not in known]
            if fresh:
                self.brain.add_content([Content(id=c.id, title=c.title) for c in fresh],
                                       vectors={c.id: vectors[c.id] for c in fresh})
        self.brain.apply_crowd(dict(resp.neighbours), dict(resp.popularity),
                               list(resp.trends), resp.global_version)
        self._take_key(resp.hub_key_id, resp.hub_public_key, resp.hub_key_sig)

    def _take_key(self, key_id: int, public: bytes, sig: bytes) -> None:
        """Adopt the announced key if the hub signed it and it is newer; otherwise keep
        the current one (the pull itself stands)."""
        current = self.hub_key()
        try:
            new = accept_announcement(current, key_id, public, sig, self._verify)
        except AnnouncementError as exc:
            stale = isinstance(exc, StaleAnnouncement)
            counter = "hub_key_stale" if stale else "hub_key_refused"
            info = self._get_info()
            fields: dict[str, Any] = {counter: int(info.get(counter, 0)) + 1}
            if not stale:
                fields["hub_key_refusal"] = f"{exc.reason}: {exc.message}"[:300]
            self._info(**fields)
            seen = (key_id, public, sig, exc.reason)
            if seen not in self._warned:
                if len(self._warned) >= 64:  # a new forgery every pull: stay bounded
                    self._warned.clear()
                self._warned.add(seen)
                # A genuine but older key is what a lagging shard replica serves: no alarm.
                (log.info if stale else log.warning)(
                    "hub key announcement refused; keeping the current key",
                    extra={"fields": {"reason": exc.reason, "announced_key_id": key_id,
                                      "current_key_id": current.key_id if current else 0,
                                      "detail": exc.message[:200]}})
            return
        if new is not None:
            self.brain.set_sync_state(K_HUB, _pack([new.key_id, new.public, sig]))
            self._verified = (new.key_id, new.public, sig)
            log.info("hub key rotated (signature verified)",
                     extra={"fields": {"hub_key_id": new.key_id}})

    # -- the cycle -----------------------------------------------------------------

    def sync(self) -> SyncOutcome:
        """build → push → pull; any failure backs off (the queue keeps everything)."""
        now = self._mono()
        built = pushed = pulls = seq = 0
        try:
            built = self.build()
            ack = self.push()
            if ack is not None:
                seq, pushed = ack.seq, self.last_push_real
            if self._mono() >= self._pull_at:
                pulls = self.pull(ask_version=ack is None)
        except OmegaError as exc:  # protocol, transport, brain, no group: all retried later
            retry = exc.retry_after_s if isinstance(exc, RateLimited) and exc.retry_after_s \
                else 0.0
            wait = self.schedule.failed(self._mono(), retry)
            self._info(last_error=f"{type(exc).__name__}: {exc}"[:300],
                       failures=self.schedule.backoff.failures)
            log.warning("sync failed; backing off", extra={"fields": {
                "error": str(exc)[:200], "retry_in_s": round(wait, 3)}})
            if isinstance(exc, PullRejected):
                self._info(rejected_pulls=self._get_info().get("rejected_pulls", 0) + 1)
            return SyncOutcome(built, pushed, seq, pulls, self.applied_version(),
                               type(exc).__name__, wait)
        self.schedule.synced(now)
        self._info(last_error="", failures=0)
        return SyncOutcome(built, pushed, seq, pulls, self.applied_version())

    def heartbeat(self) -> None:
        try:
            ack = self._link_now().heartbeat()
            self._announced = max(self._announced, ack.global_version)
        except OmegaError as exc:
            log.info("heartbeat failed", extra={"fields": {"error": str(exc)[:200]}})
        self.schedule.heartbeat_done(self._mono())

    def sleep_for(self) -> float:
        """Seconds until the next sync or heartbeat is due."""
        return self.schedule.sleep_for(self._mono())

    def tick(self) -> float:
        """Run whatever is due; returns the seconds the caller may sleep."""
        now = self._mono()
        if self.schedule.sync_due(now):
            self.sync()
        elif self.schedule.heartbeat_due(now):
            self.heartbeat()
        return self.schedule.sleep_for(self._mono())

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    # -- status --------------------------------------------------------------------

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = _unpack(self.brain.sync_state(K_INFO), {})
        return info

    def _info(self, **fields: Any) -> None:
        info = self._get_info()
        info.update(fields)
        self.brain.set_sync_state(K_INFO, _pack(info))

    def status(self) -> dict[str, Any]:
        """What ``omega-node tv status`` shows of the sync."""
        info = self._get_info()
        hub = self.hub_key()
        today = day_of(self._wall())
        entry = self._ledger().get(today)
        contrib = _unpack(self.brain.sync_state(K_CONTRIB), {})
        return {
            "group": self.group.name if self.group else None,
            "endpoints": list(self.group.endpoints) if self.group else [],
            "region": self.settings.region,
            "tier": self.settings.tier,
            "interval_s": self.settings.interval,
            "last_push": info.get("last_push"),
            "last_push_seq": info.get("last_push_seq"),
            "last_pull": info.get("last_pull"),
            # The crowd's lists are pulled at most every crowd_refresh_s.
            "next_pull_in_s": round(max(0.0, self._pull_at - self._mono()), 1),
            "last_error": info.get("last_error", ""),
            "queue": self.queued(),
            "reports_built": int(contrib.get("built", 0)),
            "reports_pushed": int(info.get("pushed_real", 0)),
            "rejected_pulls": int(info.get("rejected_pulls", 0)),
            "backoff": self.schedule.state(self._mono()),
            "global_version": self.applied_version(),
            "hub_key_id": hub.key_id if hub else 0,
            # Key announcements refused (forged, unsigned, malformed, or no verify key
            # to check them with), the last reason, and genuine older ones ignored.
            "hub_key_refused": int(info.get("hub_key_refused", 0)),
            "hub_key_refusal": info.get("hub_key_refusal", ""),
            "hub_key_stale": int(info.get("hub_key_stale", 0)),
            "hub_verify_key": self._verify is not None,
            "budget_used_today": int(contrib.get("used", 0))
            if int(contrib.get("day", -1)) == today else 0,
            "daily_budget": self.settings.daily_budget,
            "epsilon_today": {
                "local": entry.local if entry else 0.0,
                "central_per_report": entry.central_per_report if entry else 0.0,
                "amplified": bool(entry and entry.delta_per_report > 0),
                "reports": entry.reports if entry else 0,
            },
        }
