"""The release adversary (BENCHMARKS.md §6): membership inference against the published lists.

A reader of the published release tries to learn what one TV watched. We give
it the strongest position differential privacy allows for: it knows every
other TV's reports exactly (the sums without the target, ``S'``), it knows one
title ``x`` the target watched (the *anchor*), and it sees the noisy,
thresholded counts of the anchor's pairs as the hub computes them
(``release.noisy_select`` with the release's σ and threshold: raw counts, not
the row-normalized top-k the hub actually publishes, which hide more). For each
candidate title ``y`` its evidence that the target reported ``(x, y)`` is the
published noisy count minus ``S'(x, y)``; an unpublished pair is no evidence.
It names the titles with the most evidence (ties in random order): **top-1** /
**top-10** is how often the first / one of the first ten is a title the target
reported with ``x``. **Chance** is the same rate for a uniform guess among the
catalog. The advantage over chance is what the release leaks about this TV.

The noise the adversary faces is the release's σ for *one* TV's contribution:
a simulated 1 M fleet scales everyone's counts, not the noise on one TV, so the
leak depends on ε per release, not on the fleet (the quality does). Each row
also gives ε per TV per day (``releases_per_day`` releases composed by the
PLD accountant) and the quality of the same setting (numpy crowd path, test
item) at the real population and at the simulated fleet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.federation.accountant import PrivacyAccountant
from omega.federation.release import noisy_select
from omega.federation.report import CoView
from omega.federation.sums import CoviewSums
from omega.sim.federated import FederatedSettings, tv_coviews
from omega.sim.movielens import Item, UserHistory

__all__ = ["ADVERSARY", "SETTINGS", "release_adversary"]

ADVERSARY = "release"
#: ε per release of each row; None = no noise and no threshold.
SETTINGS: tuple[float | None, ...] = (None, 8.0, 4.0, 2.0, 1.0, 0.5)
DEFAULT_EPSILON = 1.0

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


def _rows(sums: CoviewSums) -> dict[int, tuple[U64, F64, I64]]:
    """Each title's pairs as (partner keys, weights, reports), from both sides."""
    a, b, w, n = sums.pair_arrays()
    src = np.r_[a, b].astype(np.uint64)
    dst = np.r_[b, a].astype(np.uint64)
    ww, nn = np.r_[w, w], np.r_[n, n]
    order = np.argsort(src, kind="stable")
    src, dst, ww, nn = src[order], dst[order], ww[order], nn[order]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]]) if src.size else np.zeros(0, int)
    ends = np.r_[starts[1:], src.size]
    return {
        int(src[lo]): (dst[lo:hi], ww[lo:hi], nn[lo:hi])
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)
    }


def _anchor(coviews: Sequence[CoView]) -> tuple[int, dict[int, float]] | None:
    """The target's title with the most reported partners, and those partners' weights."""
    partners: dict[int, dict[int, float]] = {}
    for cv in coviews:
        partners.setdefault(cv.a, {})[cv.b] = cv.weight
        partners.setdefault(cv.b, {})[cv.a] = cv.weight
    if not partners:
        return None
    x = max(sorted(partners), key=lambda t: len(partners[t]))
    return x, partners[x]


def _chance(n: int, p: int, k: int) -> float:
    """P(at least one of k uniform draws without replacement among n hits one of p)."""
    if p <= 0 or n <= 0:
        return 0.0
    miss = 1.0
    for i in range(min(k, n)):
        miss *= max(n - p - i, 0) / (n - i)
    return 1.0 - miss


def release_adversary(
    users: Sequence[UserHistory],
    items: Sequence[Item],
    fed: FederatedSettings,
    *,
    settings: Sequence[float | None] = SETTINGS,
    targets: int = 200,
    releases_per_day: int = 4,  # the hub's default: a release every 6 h
    with_quality: bool = True,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per setting: the adversary's top-1/top-10 beside chance (see the module docs).

    ``with_quality``: each row's ``quality`` column holds HR@10 / NDCG@10 of the
    same setting's release (numpy crowd path, test item with history B) at the real
    population and at the simulated fleet ``fed.fleet``.
    """
    per_tv = [tv_coviews(u, items, fed) for u in users]
    total = CoviewSums()
    for cvs in per_tv:
        for cv in cvs:
            total.add(cv)
    rows_of = _rows(total)
    n_catalog = len(items)
    step = max(1, len(users) // max(targets, 1))
    chosen = [i for i in range(0, len(users), step)][:targets]
    out: list[dict[str, Any]] = []
    for eps in settings:
        noise = eps is not None
        base = fed.release_settings(noise=noise, fleet=None, population=len(users))
        rs = replace(base, epsilon=eps) if eps is not None else base
        sigma = rs.sigma
        threshold = rs.threshold_sigmas * sigma
        rng = np.random.default_rng(seed)
        top1 = top10 = 0.0
        chance1 = chance10 = 0.0
        counted = 0
        for i in chosen:
            anchor = _anchor(per_tv[i])
            if anchor is None:
                continue
            x, partners = anchor
            dst, w, n = rows_of[x]
            mine = np.array([partners.get(int(d), 0.0) for d in dst])
            published, noisy = noisy_select(w, n, sigma=sigma, threshold=threshold,
                                            min_contributors=rs.min_contributors, rng=rng)
            evidence = np.where(published, noisy - (w - mine), -np.inf)
            # Candidates: every catalog title but x; those outside x's row have no evidence.
            jitter = rng.random(dst.size)
            order = np.lexsort((jitter, -evidence))
            named = [int(dst[j]) for j in order[:10] if np.isfinite(evidence[j])]
            # Fill with uniform guesses among the titles without evidence.
            rest = n_catalog - 1 - len(named)
            hit_partners = len(partners)
            found = [t in partners for t in named]
            p_rest = hit_partners - sum(found)
            t1 = 1.0 if (found and found[0]) else (
                0.0 if named else _chance(rest, p_rest, 1))
            t10 = 1.0 if any(found) else _chance(rest, p_rest, 10 - len(named))
            top1 += t1
            top10 += t10
            chance1 += _chance(n_catalog - 1, hit_partners, 1)
            chance10 += _chance(n_catalog - 1, hit_partners, 10)
            counted += 1
        acc = PrivacyAccountant()
        if noise:
            for _ in range(releases_per_day):
                acc.spend(sigma, rs.sensitivity)
        eps_day = acc.epsilon(rs.delta) if noise else math.inf
        c = max(counted, 1)
        row: dict[str, Any] = {
            "adversary": ADVERSARY,
            "setting": "no noise" if eps is None else f"epsilon={eps:g} per release",
            "default": eps == DEFAULT_EPSILON,
            "epsilon_per_release": eps,
            "top1": round(top1 / c, 4),
            "top10": round(top10 / c, 4),
            "chance_top1": round(chance1 / c, 5),
            "chance_top10": round(chance10 / c, 5),
            "advantage_top1": round((top1 - chance1) / c, 4),
            "advantage_top10": round((top10 - chance10) / c, 4),
            "epsilon_per_day": None if not math.isfinite(eps_day) else round(eps_day, 3),
            "releases_per_day": releases_per_day,
            "sigma": round(sigma, 3),
            "threshold": round(threshold, 3),
            "targets": counted,
        }
        if with_quality:
            row["quality"] = _quality(total, users, items, fed, eps)
        out.append(row)
    return out


def _quality(total: CoviewSums, users: Sequence[UserHistory], items: Sequence[Item],
             fed: FederatedSettings, eps: float | None) -> dict[str, float]:
    from omega.federation.release import build_release
    from omega.federation.report import title_key
    from omega.sim.baselines import rank
    from omega.sim.fedbench import BrainCrowdSettings
    from omega.sim.federated import CrowdScorer
    from omega.sim.metrics import hit_ndcg

    catalog = {title_key(str(i.id)): str(i.id) for i in items}
    hists = [u.test_history("all") for u in users]
    targets = [u.test_item for u in users]
    out: dict[str, float] = {}
    for label, fleet in (("real", None), ("fleet", fed.fleet)):
        rs = fed.release_settings(noise=eps is not None, fleet=fleet, population=len(users))
        if eps is not None:
            rs = replace(rs, epsilon=eps)
        rel = build_release(total, catalog, rs, np.random.default_rng(0))
        scorer = CrowdScorer(rel, items, BrainCrowdSettings.recency_decay)
        h, n = hit_ndcg(rank(scorer, hists, 10), targets)
        out[f"hr_{label}"] = round(float(h.mean()), 4)
        out[f"ndcg_{label}"] = round(float(n.mean()), 4)
    out["fleet"] = fed.fleet
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m omega.sim.membership --data DIR [--json]``: the rows, as a table or JSON."""
    import argparse
    import json
    import sys

    from omega.errors import OmegaError
    from omega.sim.movielens import load_movielens, split_leave_last

    parser = argparse.ArgumentParser(prog="python -m omega.sim.membership",
                                     description="The release adversary (BENCHMARKS.md §6).")
    parser.add_argument("--data", required=True, help="MovieLens folder")
    parser.add_argument("--targets", type=int, default=200, help="TVs attacked (default 200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        data = load_movielens(args.data)
    except OmegaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = release_adversary(list(split_leave_last(data).users), data.items,
                             FederatedSettings(), targets=args.targets)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'setting':<26}{'top1':>7}{'top10':>7}{'chance1':>9}{'chance10':>9}"
          f"{'adv10':>8}{'ε/day':>9}  quality HR@10 real / at {FederatedSettings().fleet:,}")
    for r in rows:
        q = r.get("quality", {})
        eps_day = "inf" if r["epsilon_per_day"] is None else f"{r['epsilon_per_day']:.1f}"
        print(f"{r['setting']:<26}{r['top1']:>7.3f}{r['top10']:>7.3f}{r['chance_top1']:>9.4f}"
              f"{r['chance_top10']:>9.4f}{r['advantage_top10']:>+8.3f}{eps_day:>9}  "
              f"{q.get('hr_real', float('nan')):.3f} / {q.get('hr_fleet', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
