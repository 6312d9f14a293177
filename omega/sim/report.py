"""The quality report: per-method results, paired comparisons, the held-out slice, text.

Plain data (frozen dataclasses with ``to_dict`` for ``--json``) and
:func:`format_text`; computed by :func:`omega.sim.quality.run_quality`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from omega.sim.metrics import (
    PairedDiff,
    coverage,
    hit_ndcg,
    mean_se,
)
from omega.sim.replay import HELD_OUT_FIRST, HELD_OUT_MIN_HISTORY

__all__ = [
    "BRAIN",
    "CROWD_LISTS",
    "CROWD_POPULARITY",
    "HELD_OUT_BASELINE",
    "Comparison",
    "HeldOutResult",
    "MethodResult",
    "QualityReport",
    "SliceResult",
    "format_text",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BRAIN = "brain"
#: Rows of the brain fed with crowd knowledge (the plain ``brain`` row has none).
CROWD_POPULARITY = "brain + popularity [crowd]"
CROWD_LISTS = "brain + co-view lists [crowd]"
#: The one baseline scored on held-out positions: it is fitted on embeddings only. The
#: collaborative ones are fitted on training histories that contain these targets.
HELD_OUT_BASELINE = "content"


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceResult:
    """One method on one slice: means with standard errors, and the per-user values."""

    users: int
    hr: float
    hr_se: float
    ndcg: float
    ndcg_se: float
    coverage: float
    hits: FloatArray = field(repr=False, compare=False)
    ndcgs: FloatArray = field(repr=False, compare=False)

    @classmethod
    def of(cls, lists: IntArray, targets: Sequence[int], n_items: int) -> SliceResult:
        hits, ndcgs = hit_ndcg(lists, targets)
        hr, hr_se = mean_se(hits)
        nd, nd_se = mean_se(ndcgs)
        return cls(len(targets), hr, hr_se, nd, nd_se, coverage(lists, n_items), hits, ndcgs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "hr": _num(self.hr),
            "hr_se": _num(self.hr_se),
            "ndcg": _num(self.ndcg),
            "ndcg_se": _num(self.ndcg_se),
            "coverage": _num(self.coverage),
        }


@dataclass(frozen=True)
class MethodResult:
    name: str
    params: dict[str, float | int]
    test: SliceResult
    cold: SliceResult | None
    val_hr: float | None
    val_ndcg: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "test": self.test.to_dict(),
            "cold": self.cold.to_dict() if self.cold else None,
            "val": None
            if self.val_ndcg is None
            else {"hr": _num(self.val_hr), "ndcg": _num(self.val_ndcg)},
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Comparison:
    """``reference − other`` on one slice and metric, paired by user."""

    reference: str
    other: str
    slice: str
    metric: str
    diff: PairedDiff

    def to_dict(self) -> dict[str, Any]:
        d = self.diff
        return {
            "reference": self.reference,
            "other": self.other,
            "slice": self.slice,
            "metric": self.metric,
            "diff": _num(d.diff),
            "se": _num(d.se),
            "ci95": [_num(d.low), _num(d.high)],
            "users": d.n,
        }


@dataclass(frozen=True)
class HeldOutResult:
    """The brain and the content baseline on the held-out positions (no tuning target).

    Both are scored on the same cases: per evaluated user, the targets
    ``items[-5] .. items[-4 - positions]`` predicted two steps ahead
    (:func:`held_out_positions`). ``hr`` and ``ndcg`` are brain − content, paired
    and clustered by user (:func:`omega.sim.metrics.clustered_paired_diff`).
    """

    positions: int
    users: int
    """Users with at least one case."""
    brain: SliceResult
    content: SliceResult
    content_params: dict[str, float | int]
    hr: PairedDiff
    ndcg: PairedDiff
    brain_seconds: float
    """Time of the brain's held-out ``recommend`` calls, inside its one replay."""
    content_seconds: float

    @property
    def cases(self) -> int:
        return self.brain.users

    def to_dict(self) -> dict[str, Any]:
        def method(r: SliceResult) -> dict[str, Any]:
            return {"hr": _num(r.hr), "ndcg": _num(r.ndcg), "coverage": _num(r.coverage)}

        def diff(d: PairedDiff) -> dict[str, Any]:
            return {
                "diff": _num(d.diff),
                "se": _num(d.se),
                "ci95": [_num(d.low), _num(d.high)],
                "excludes_0": d.significant,
                "users": d.n,
            }

        return {
            "positions": self.positions,
            "targets": f"items[-{HELD_OUT_FIRST}] .. items[-{HELD_OUT_FIRST + self.positions - 1}]",
            "history": "items[:-back - 1] (two steps ahead), at least "
            f"{HELD_OUT_MIN_HISTORY} views",
            "cases": self.cases,
            "users": self.users,
            "brain": method(self.brain),
            HELD_OUT_BASELINE: {**method(self.content), "params": self.content_params},
            "brain_minus_content": {"HR": diff(self.hr), "NDCG": diff(self.ndcg)},
            "ci": "95 %, paired, clustered by user (each user's cases averaged first)",
            "not_scored": "most popular, item-kNN, EASE, content + popularity: fitted on "
            "training data that contains these targets",
            "seconds": {
                "brain_recommend": round(self.brain_seconds, 3),
                "content": round(self.content_seconds, 3),
            },
        }


@dataclass(frozen=True)
class QualityReport:
    data_dir: str
    layout: str
    n_users: int
    n_items: int
    n_interactions: int
    evaluated_users: int
    cold_users: int
    k: int
    embedder: str
    embeddings_cached: bool
    methods: tuple[MethodResult, ...]
    reference: str | None
    comparisons: tuple[Comparison, ...]
    timings: dict[str, float]
    brain: dict[str, Any] | None
    date: str
    held_out: HeldOutResult | None = None
    """None when off (``held_out_positions = 0``) or without a brain."""
    history: str = "all"
    """The test item's history: "all" (B: training + validation item) or "train" (A)."""
    federated: dict[str, Any] | None = None
    """With ``--federated``: the releases' settings, sizes and the fleet crossing."""

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "quality",
            "date": self.date,
            "data": {
                "dir": self.data_dir,
                "layout": self.layout,
                "users": self.n_users,
                "items": self.n_items,
                "interactions": self.n_interactions,
                "evaluated_users": self.evaluated_users,
                "cold_users": self.cold_users,
            },
            "k": self.k,
            "history": self.history,
            "embedder": self.embedder,
            "embeddings_cached": self.embeddings_cached,
            "methods": [m.to_dict() for m in self.methods],
            "reference": self.reference,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "timings": {key: round(v, 3) for key, v in self.timings.items()},
            "brain": self.brain,
            "held_out": self.held_out.to_dict() if self.held_out is not None else None,
            "federated": self.federated,
        }


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 5)


def format_text(report: QualityReport) -> str:
    """The report as a table for a terminal."""
    k = report.k
    lines = [
        f"Quality benchmark (BENCHMARKS.md §1) on {report.data_dir} [{report.layout}], "
        f"{report.date}",
        f"  {report.n_users} users, {report.n_items} items, {report.n_interactions} "
        f"interactions; evaluated {report.evaluated_users} users "
        f"({report.cold_users} in the cold-start slice); embedder {report.embedder}"
        + (" (cached)" if report.embeddings_cached else ""),
        "  test history: "
        + ("B, training + validation item (what a TV knows)" if report.history == "all"
           else "A, training only (two steps ahead)"),
        "",
        f"{'method':<30}{'HR@' + str(k):>16}{'NDCG@' + str(k):>16}{'cov':>7}"
        f"{'cold HR':>16}{'cold NDCG':>16}{'time':>8}  params",
    ]
    for m in report.methods:
        cold = m.cold
        lines.append(
            f"{m.name:<30}{_pm(m.test.hr, m.test.hr_se):>16}"
            f"{_pm(m.test.ndcg, m.test.ndcg_se):>16}{m.test.coverage:>7.3f}"
            f"{_pm(cold.hr, cold.hr_se) if cold else '-':>16}"
            f"{_pm(cold.ndcg, cold.ndcg_se) if cold else '-':>16}"
            f"{m.seconds:>7.1f}s  {_params(m.params)}"
        )
    names = {m.name for m in report.methods}
    if BRAIN in names:
        lines.append(f"  {BRAIN}: its own user's views and the catalog only, no crowd knowledge")
    if names & {CROWD_POPULARITY, CROWD_LISTS}:
        lines.append(
            "  [crowd]: the brain also given what federation would send, computed centrally "
            "from every training history (no privacy, no noise); no cold-start slice"
        )
    if BRAIN in names or names & {CROWD_POPULARITY, CROWD_LISTS}:
        lines.append(
            "  the product's path is the brain with the crowd's private release: the "
            "federated rows of `bench quality --federated`; the local-only brain is a TV "
            "before its first pull"
        )
    if report.comparisons:
        lines += ["", f"Paired differences, {report.reference} − baseline (95% CI, per user):"]
        by_other: dict[str, list[Comparison]] = {}
        for c in report.comparisons:
            by_other.setdefault(c.other, []).append(c)
        for other, comps in by_other.items():
            parts = [
                f"{c.slice} {c.metric} {c.diff.diff:+.3f} [{c.diff.low:+.3f}, {c.diff.high:+.3f}]"
                + ("*" if c.diff.significant else "")
                for c in comps
            ]
            lines.append(f"  vs {other:<28} " + "   ".join(parts))
        lines.append("  (* the interval excludes 0)")
    if report.held_out is not None:
        lines += ["", *_held_out_lines(report)]
    if report.federated:
        lines += ["", *(str(x) for x in report.federated.get("text", []))]
    if report.brain:
        b = report.brain
        lines += [
            "",
            f"Brain: {b['users']} users replayed in {b['seconds']:.1f} s "
            f"({b['seconds_per_user_p50']:.2f} s/user p50, {b['seconds_per_user_p99']:.2f} p99); "
            f"dropped {b['foreign_ids']} unknown ids and {b['watched_items']} watched items; "
            f"embedder lookups {b['embed_hits']} shared, {b['embed_misses']} computed",
        ]
    lines += ["", "Time: " + ", ".join(f"{key} {v:.1f} s" for key, v in report.timings.items())]
    return "\n".join(lines)


def _held_out_lines(report: QualityReport) -> list[str]:
    h = report.held_out
    assert h is not None
    k = report.k
    last = HELD_OUT_FIRST + h.positions - 1
    lines = [
        f"Held-out positions: targets items[-{HELD_OUT_FIRST}..-{last}], each from the views "
        f"before the one preceding it (two steps ahead, >= {HELD_OUT_MIN_HISTORY} views); "
        "no test or tuning target",
    ]
    if h.cases == 0:
        lines.append(
            f"  no case: a user needs at least {HELD_OUT_FIRST + HELD_OUT_MIN_HISTORY + 1} views"
        )
        return lines
    lines += [
        f"  {h.cases} cases from {h.users} users",
        f"  {BRAIN:<30}HR@{k} {h.brain.hr:.3f}   NDCG@{k} {h.brain.ndcg:.3f}",
        f"  {HELD_OUT_BASELINE:<30}HR@{k} {h.content.hr:.3f}   NDCG@{k} {h.content.ndcg:.3f}"
        f"   ({_params(h.content_params)}, as tuned on validation)",
        f"  {BRAIN} − {HELD_OUT_BASELINE}, 95% CI clustered by user: "
        f"HR {_ci(h.hr)}   NDCG {_ci(h.ndcg)}",
    ]
    test = {
        c.metric: c.diff
        for c in report.comparisons
        if c.reference == BRAIN and c.other == HELD_OUT_BASELINE and c.slice == "test"
    }
    if test:
        lines.append(
            f"  test item, one case per user ({test['HR'].n} users), paired 95% CI: "
            f"HR {_ci(test['HR'])}   NDCG {_ci(test['NDCG'])}"
        )
    lines += [
        "  (* the interval excludes 0; most popular, item-kNN, EASE and content + popularity "
        "are not scored here: they are fitted on training data that contains these targets)",
        f"  held-out time: brain recommend {h.brain_seconds:.1f} s (inside its replay), "
        f"content {h.content_seconds:.1f} s",
    ]
    return lines


def _ci(d: PairedDiff) -> str:
    return f"{d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + ("*" if d.significant else "")


def _pm(mean: float, se: float) -> str:
    return f"{mean:.3f} ±{se:.3f}" if math.isfinite(se) else f"{mean:.3f}"


def _params(params: dict[str, float | int]) -> str:
    return " ".join(f"{key}={v:g}" for key, v in params.items())

