"""``omega-node bench privacy``: the benchmark users replayed as TVs, and the adversaries.

Every user of a MovieLens set becomes a TV that watches its history, spread over
``days`` days, and contributes through the real code: windowed pairs weighted as
the recommender weighs views, the daily budget, generalized randomized response,
sealed reports padded with dummies to 8 a push (``omega.sync.contrib``), signed
pushes through ``DeviceClient`` into the real shard service and state machine
(``omega.sim.shardsim``), which stores them without identities and hands out
shuffled batches of >= k devices; the hub opens the batches with its key.
Pushes per TV and day: ceil(budget / 8) at fixed slots with jitter (a real TV
pushes on its tier, 288 a day at 5 min, and the extra pushes are all dummies,
which changes nothing below but the run time).

Adversaries, each beside the rate it is compared with (``chance``):

- **shard**: sees each device's identity, the sealed bytes, their sizes and times.
  It guesses a TV's titles as the most-watched titles of the *other* TVs whose
  traffic looks the same (same number of pushes, same sizes, same timing slots),
  knowing every other TV's history (a strong side channel). Chance: the same guess
  from all other TVs, ignoring traffic (popularity).
- **hub**: sees opened reports in shuffled batches, no identities. Given one title
  ``x`` a target TV watched, it names the titles most often co-viewed with ``x`` in
  the reports (top-1, top-10). Chance: the same guess from every report except the
  target's own — what the crowd's statistics say about anyone who watched ``x``; so
  the ratio is what the target's own reports give away.
- **hub-link**: the hub takes one report of a target TV in one batch and ranks the
  reports of another batch that holds some of the target's reports by shared
  titles; a hit is a report of the same TV. Chance: a random report of that batch.
- **release**: a reader of the published lists (membership inference,
  ``omega.sim.membership.release_adversary``), rows of the same shape plus the
  quality of each setting's release.

Rows (``--json``): ``{"adversary", "setting", "default", "top1", "top10",
"chance_top1", "chance_top10", "epsilon_per_day"}``; ``epsilon_per_day`` is the
central ε of one TV's full daily budget (``omega.sync.accountant``: FMT21 where it
applies, composed with dp-accounting at δ = 1e-6 for the day).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omega.client import ClientSettings, DeviceClient
from omega.federation.report import HubKey, Randomizer, open_report, title_key
from omega.protocol import derive_device_key
from omega.sim.shardsim import RecordingRequester, SimClock, in_process_shard
from omega.sync import accountant as acct
from omega.sync.contrib import Budget, choose, due_pairs, fill, seal_reports, view_weight

__all__ = ["DEFAULT_SETTINGS", "PrivacySetting", "Row", "run_privacy", "table"]

FLEET = b"privacy-bench-fleet-key-0123456789"
DEDUP = b"privacy-bench-dedup-secret-012345"
T0 = 1_767_225_600.0
DAY = 86_400.0
DELTA = 1e-6
REPORTS_PER_PUSH = 8
WINDOW = 3


@dataclass(frozen=True)
class PrivacySetting:
    keep: float
    budget: int
    k: int
    default: bool = False

    @property
    def name(self) -> str:
        return f"keep={self.keep:g} budget={self.budget} k={self.k}"


DEFAULT_SETTINGS = (
    PrivacySetting(0.5, 24, 50, default=True),   # SyncSettings' defaults
    PrivacySetting(1e-6, 24, 50),                 # ε0 ≈ 4 a report at 9,742 titles
    PrivacySetting(0.5, 8, 50),
    PrivacySetting(0.5, 24, 10),
)


@dataclass(frozen=True)
class Row:
    adversary: str
    setting: str
    default: bool
    top1: float
    top10: float
    chance_top1: float
    chance_top10: float
    epsilon_per_day: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Tv:
    device: str
    views: list[tuple[str, float]]
    per_day: list[int]          # views released to the TV by the end of each day (cumulative)
    done: int = 0
    budget: Budget = field(default_factory=Budget)
    queue: list[bytes] = field(default_factory=list)
    seq: int = 0
    traffic: list[tuple[int, int]] = field(default_factory=list)  # (slot, frame bytes)


@dataclass
class Replay:
    """What the servers saw in one setting, with the ground truth beside it."""

    watched: list[set[str]]
    traffic: list[tuple[tuple[int, int], ...]]
    batches: list[list[tuple[int, tuple[str, str] | None]]]  # (owner TV, opened pair)
    titles: int


def replay(users: Sequence[Sequence[tuple[str, float]]], catalog: Sequence[str],
           setting: PrivacySetting, *, days: int, seed: int,
           progress: Callable[[int], None] | None = None) -> Replay:
    rng = random.Random(seed)
    clock = SimClock(T0)
    svc = in_process_shard(FLEET, DEDUP, clock, k_anonymity=setting.k)
    requester = RecordingRequester(svc, clock)
    hub = HubKey.generate(1)
    randomizer = Randomizer(setting.keep)
    keys = [title_key(c) for c in catalog]
    by_key = dict(zip(keys, catalog, strict=True))
    tvs = []
    for i, views in enumerate(users):
        n = len(views)
        tvs.append(_Tv(f"tv{i:05d}", list(views), [n * (d + 1) // days for d in range(days)]))
    clients = {tv.device: DeviceClient(("inproc://shard",), tv.device,
                                       derive_device_key(FLEET, tv.device),
                                       ClientSettings(attempts=1), requester=requester,
                                       wall=clock) for tv in tvs}
    owner: dict[bytes, int] = {}
    batches: list[list[tuple[int, tuple[str, str] | None]]] = []
    pushes_per_day = max(1, math.ceil(setting.budget / REPORTS_PER_PUSH))

    def drain() -> None:
        while (batch := svc.take_batch()) is not None:
            opened = []
            for blob in batch.reports:
                cv = open_report({hub.key_id: hub}, blob).coview
                pair = None if cv is None else (by_key.get(cv.a, "?"), by_key.get(cv.b, "?"))
                opened.append((owner.get(blob, -1), pair))
            batches.append(opened)
            svc.release_batch(batch.bucket)

    for day in range(days):
        slots = []
        for t in range(len(tvs)):
            for s in range(pushes_per_day):
                at = T0 + day * DAY + (s + rng.uniform(0.05, 0.95)) * DAY / pushes_per_day
                slots.append((at, t, day * pushes_per_day + s))
        slots.sort()
        for at, t, slot in slots:
            clock.t = at
            tv = tvs[t]
            # Views watched by this slot: the day's share, released evenly over its slots.
            s_in_day = slot % pushes_per_day + 1
            before = tv.per_day[day - 1] if day else 0
            upto = before + (tv.per_day[day] - before) * s_in_day // pushes_per_day
            if upto > tv.done:
                pairs = due_pairs(tv.views[:upto], upto - tv.done, WINDOW)
                tv.done = upto
                today = int(at // DAY)
                chosen = choose(pairs, tv.budget.room(today, setting.budget))
                blobs = seal_reports(chosen, keys, randomizer, hub, rng)
                tv.budget = tv.budget.spend(today, len(blobs))
                for b in blobs:
                    owner[b] = t
                tv.queue.extend(blobs)
            real, tv.queue = tv.queue[:REPORTS_PER_PUSH], tv.queue[REPORTS_PER_PUSH:]
            reports = fill(real, REPORTS_PER_PUSH, hub, rng)
            tv.seq = max(tv.seq + 1, int(at * 1e6))
            n_before = len(requester.frames)
            clients[tv.device].push_seq(tv.seq, reports)
            tv.traffic.extend((slot % pushes_per_day, len(f.sent))
                              for f in requester.frames[n_before:])
            if progress is not None:
                progress(1)
        drain()
    svc.close_open_bucket()
    drain()
    svc.close()
    watched = [{c for c, _ in tv.views[:tv.done]} for tv in tvs]
    return Replay(watched, [tuple(tv.traffic) for tv in tvs], batches, len(catalog))


# -- adversaries -------------------------------------------------------------------


def _top(counter: Counter[str], n: int, exclude: Iterable[str] = ()) -> list[str]:
    ex = set(exclude)
    return [t for t, _ in heapq.nlargest(n + len(ex), counter.items(), key=lambda kv: kv[1])
            if t not in ex][:n]


def _rates(hits: list[tuple[bool, bool]]) -> tuple[float, float]:
    if not hits:
        return 0.0, 0.0
    return (sum(h1 for h1, _ in hits) / len(hits), sum(h10 for _, h10 in hits) / len(hits))


def shard_adversary(r: Replay) -> tuple[float, float, float, float]:
    """Guess titles from traffic look-alikes vs from everyone (popularity)."""
    everyone: Counter[str] = Counter()
    for w in r.watched:
        everyone.update(w)
    groups: dict[tuple[tuple[int, int], ...], list[int]] = defaultdict(list)
    for t, sig in enumerate(r.traffic):
        groups[tuple(sorted(sig))].append(t)
    group_counts: dict[tuple[tuple[int, int], ...], Counter[str]] = {}
    for sig, members in groups.items():
        c: Counter[str] = Counter()
        for m in members:
            c.update(r.watched[m])
        group_counts[sig] = c
    hits, chance = [], []
    for t, w in enumerate(r.watched):
        if not w:
            continue
        own = Counter(w)
        same = group_counts[tuple(sorted(r.traffic[t]))] - own
        guess = _top(same, 10)
        base = _top(everyone - own, 10)
        hits.append((bool(guess[:1]) and guess[0] in w, any(g in w for g in guess)))
        chance.append((bool(base[:1]) and base[0] in w, any(g in w for g in base)))
    return (*_rates(hits), *_rates(chance))


def hub_adversary(r: Replay, seed: int) -> tuple[float, float, float, float]:
    """Given one title of a TV, name another from the co-views, with and without its reports."""
    rng = random.Random(seed)
    partners: dict[str, Counter[str]] = defaultdict(Counter)
    own: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for batch in r.batches:
        for who, pair in batch:
            if pair is None:
                continue
            a, b = pair
            partners[a][b] += 1
            partners[b][a] += 1
            own[who].append(pair)
    hits, chance = [], []
    for t, w in enumerate(r.watched):
        if len(w) < 2:
            continue
        x = rng.choice(sorted(w))
        mine: Counter[str] = Counter()
        for a, b in own.get(t, ()):
            if a == x:
                mine[b] += 1
            elif b == x:
                mine[a] += 1
        full = partners.get(x, Counter())
        guess = _top(full, 10, exclude=(x,))
        base = _top(full - mine, 10, exclude=(x,))
        rest = w - {x}
        hits.append((bool(guess[:1]) and guess[0] in rest, any(g in rest for g in guess)))
        chance.append((bool(base[:1]) and base[0] in rest, any(g in rest for g in base)))
    return (*_rates(hits), *_rates(chance))


def link_adversary(r: Replay, seed: int, samples: int = 2000) -> tuple[float, float, float, float]:
    """Link a report of a TV to another of its reports in another batch."""
    rng = random.Random(seed)
    where: dict[int, list[tuple[int, int]]] = defaultdict(list)  # tv -> (batch, position)
    for bi, batch in enumerate(r.batches):
        for pi, (who, pair) in enumerate(batch):
            if pair is not None and who >= 0:
                where[who].append((bi, pi))
    candidates = [t for t, places in where.items() if len({b for b, _ in places}) >= 2]
    hits, chance = [], []
    for _ in range(min(samples, 50 * len(candidates))):
        if not candidates:
            break
        t = rng.choice(candidates)
        (b1, p1), = rng.sample(where[t], 1)
        others = [b for b, _ in where[t] if b != b1]
        if not others:
            continue
        b2 = rng.choice(others)
        target_pair = r.batches[b1][p1][1]
        assert target_pair is not None
        titles = set(target_pair)
        batch = r.batches[b2]
        scored = [(len(titles & set(pair)) if pair else -1, rng.random(), who)
                  for who, pair in batch]
        scored.sort(reverse=True)
        ranked = [who for _, _, who in scored]
        hits.append((ranked[0] == t, t in ranked[:10]))
        n, m = len(batch), sum(1 for who, _ in batch if who == t)
        c1 = m / n
        c10 = 1.0 - math.comb(n - m, min(10, n)) / math.comb(n, min(10, n)) if n >= 10 else 1.0
        chance.append((c1, c10))
    if not hits:
        return 0.0, 0.0, 0.0, 0.0
    t1, t10 = _rates(hits)
    return (t1, t10, sum(c for c, _ in chance) / len(chance),
            sum(c for _, c in chance) / len(chance))


def epsilon_per_day(setting: PrivacySetting, titles: int) -> float:
    """Central ε of one TV's full daily budget (FMT21 where it applies; composed by PLD)."""
    eps0 = Randomizer(setting.keep).epsilon(titles)
    cost = acct.report_privacy(eps0, setting.k, DELTA / (10 * max(1, setting.budget)))
    day = acct.add_reports({}, 0, setting.budget, cost)
    return acct.compose(day.values(), DELTA)


def table(rows: Sequence[Row]) -> str:
    head = (f"{'adversary':<10} {'setting':<28} {'top1':>6} {'chance':>7} {'top10':>6} "
            f"{'chance':>7} {'eps/day':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "*" if r.default else " "
        lines.append(f"{r.adversary:<10} {r.setting + mark:<28} {r.top1:>6.3f} "
                     f"{r.chance_top1:>7.3f} {r.top10:>6.3f} {r.chance_top10:>7.3f} "
                     f"{r.epsilon_per_day:>9.2f}")
    lines.append("* default setting; chance: see `omega.sim.privacy` (what each rate is "
                 "compared with)")
    return "\n".join(lines)


def load_users(data: Path, max_users: int) -> tuple[list[list[tuple[str, float]]], list[str]]:
    from omega.brain.settings import BrainSettings
    from omega.sim.movielens import load_movielens, split_leave_last

    ml = load_movielens(data)
    split = split_leave_last(ml)
    bs = BrainSettings()
    catalog = [f"ml{i}" for i in range(ml.n_items)]
    users = []
    for u in split.users[:max_users or None]:
        users.append([(catalog[int(i)], view_weight(float(f), bs.success_threshold,
                                                    bs.abandoned_weight))
                      for i, f in zip(u.items, u.fractions, strict=True)])
    return users, catalog


def run_rows(users: Sequence[Sequence[tuple[str, float]]], catalog: Sequence[str],
             settings: Sequence[PrivacySetting], *, days: int, seed: int,
             show_progress: bool = True,
             extra_rows: Callable[[PrivacySetting], Iterable[Row]] | None = None) -> list[Row]:
    """Rows of every adversary for every setting (``extra_rows``: the third adversary's)."""
    rows: list[Row] = []
    for setting in settings:
        bar: Any = None
        if show_progress:
            from tqdm import tqdm

            per_day = max(1, math.ceil(setting.budget / REPORTS_PER_PUSH))
            bar = tqdm(total=len(users) * days * per_day, desc=setting.name, unit="push",
                       file=sys.stderr)
        rep = replay(users, catalog, setting, days=days, seed=seed,
                     progress=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        eps = epsilon_per_day(setting, len(catalog))
        for name, figures in (("shard", shard_adversary(rep)),
                              ("hub", hub_adversary(rep, seed)),
                              ("hub-link", link_adversary(rep, seed))):
            rows.append(Row(name, setting.name, setting.default, *figures, eps))
        if extra_rows is not None:
            rows.extend(extra_rows(setting))
    return rows


def release_rows(data: Path, seed: int) -> list[dict[str, Any]]:
    """The third adversary's rows (a reader of the published lists,
    ``omega.sim.membership``); its settings are ε per release, each row with the
    quality of that setting's release (HR@10 / NDCG@10 at the real population and
    at a simulated 1 M fleet) from the same run."""
    from omega.sim import membership
    from omega.sim.federated import FederatedSettings
    from omega.sim.movielens import load_movielens, split_leave_last

    ml = load_movielens(data)
    rows = membership.release_adversary(split_leave_last(ml).users, ml.items,
                                        FederatedSettings(), with_quality=True, seed=seed)
    return [dict(r) for r in rows]


def run_privacy(args: argparse.Namespace) -> int:
    users, catalog = load_users(args.data, args.users)
    rows = run_rows(users, catalog, DEFAULT_SETTINGS, days=args.days, seed=args.seed,
                    show_progress=not args.json)
    release = release_rows(args.data, args.seed)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows] + release))
        return 0
    print(f"{len(users)} TVs, {len(catalog)} titles, {args.days} days")
    print(table(rows))
    if release:
        print(table([Row(str(r["adversary"]), str(r["setting"]), bool(r["default"]),
                         float(r["top1"]), float(r["top10"]), float(r["chance_top1"]),
                         float(r["chance_top10"]),
                         float(r["epsilon_per_day"]) if r.get("epsilon_per_day") is not None
                         else math.inf) for r in release]))
        for r in release:
            q = r.get("quality") or {}
            print(f"  release {r['setting']}: quality HR@10 {q.get('hr_real', math.nan):.3f} "
                  f"at the data set's population, {q.get('hr_fleet', math.nan):.3f} with the "
                  f"noise of {q.get('fleet', 0):,} TVs")
    return 0
