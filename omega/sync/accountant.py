"""The per-TV privacy accountant: ε spent per day, local and after shuffling.

- **Local ε** of one report is ``Randomizer.epsilon(n_titles)`` (generalized
  randomized response over the catalog's pairs, ``omega.federation.report``).
  A day's local ε is the sum over the day's *real* reports (basic composition; a
  dummy depends on no viewing data and costs nothing).
- **Central ε after shuffling.** The shard forwards reports only in shuffled
  batches from at least ``k`` devices, so the hub sees each report among ``n >= k``
  others without identities. We use the closed-form amplification bound of
  Feldman, McMillan and Talwar, "Hiding Among the Clones: A Simple and Nearly
  Optimal Analysis of Privacy Amplification by Shuffling", FOCS 2021, Theorem 3.1
  (arXiv:2012.12803): n reports of an ε₀-LDP randomizer, shuffled, are (ε, δ)-DP with

      ε ≤ log(1 + (e^ε₀ − 1)/(e^ε₀ + 1) · (8·√(e^ε₀·log(4/δ))/√n + 8·e^ε₀/n))

  **where it applies**: only for ε₀ ≤ log(n / (16·log(2/δ))). With a catalog of
  thousands of titles ε₀ of one report is ~15-18, far beyond what any batch size
  reachable here admits (it would need n ≈ 10^9-10^10), so for the default
  randomizer the bound does not apply and the central figure is the local one
  (``amplified = False``): the shuffle then hides *who* sent a report, not what is
  in it. The bound also assumes each device sends one report per batch; a device's
  several reports in one batch are composed, which is what the ledger does.
- **Composition over reports and days** uses Google's ``dp-accounting`` library:
  each report is an (ε, δ)-DP mechanism (``PrivacyLossDistribution`` built from its
  parameters) and the privacy loss distributions are composed; the result is the
  ε at the total δ. Imported lazily: the TV's sync loop only records counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["DayEntry", "ReportPrivacy", "compose", "fmt21_epsilon", "report_privacy"]


def fmt21_epsilon(eps0: float, n: int, delta: float) -> float | None:
    """FMT21 Thm 3.1 central ε of n shuffled ε₀-LDP reports, or None where it does not apply."""
    if n < 1 or not 0 < delta < 1 or not math.isfinite(eps0) or eps0 < 0:
        return None
    if eps0 > math.log(n / (16.0 * math.log(2.0 / delta))):
        return None
    e = math.exp(eps0)
    return math.log1p((e - 1.0) / (e + 1.0)
                      * (8.0 * math.sqrt(e * math.log(4.0 / delta)) / math.sqrt(n) + 8.0 * e / n))


@dataclass(frozen=True)
class ReportPrivacy:
    """What one real report costs a TV."""

    local: float
    central: float
    #: δ of the central figure (0 when it is the local, pure ε).
    delta: float
    amplified: bool


def report_privacy(eps0: float, k: int, delta: float) -> ReportPrivacy:
    """One report's local ε and its central (ε, δ) after a shuffle among >= k devices."""
    central = fmt21_epsilon(eps0, k, delta)
    if central is None or central >= eps0:
        return ReportPrivacy(eps0, eps0, 0.0, False)
    return ReportPrivacy(eps0, central, delta, True)


@dataclass(frozen=True)
class DayEntry:
    """One UTC day of a TV's contributions."""

    day: int
    reports: int
    local: float
    central_per_report: float
    delta_per_report: float

    def to_json(self) -> list[float]:
        return [self.day, self.reports, self.local, self.central_per_report,
                self.delta_per_report]

    @classmethod
    def from_json(cls, row: list[float]) -> DayEntry:
        return cls(int(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4]))


def add_reports(ledger: Mapping[int, DayEntry], day: int, n: int, cost: ReportPrivacy,
                keep_days: int = 31) -> dict[int, DayEntry]:
    """The ledger with ``n`` more real reports on ``day`` (old days dropped)."""
    out = {d: e for d, e in ledger.items() if d > day - keep_days}
    prev = out.get(day)
    out[day] = DayEntry(day, (prev.reports if prev else 0) + n,
                        (prev.local if prev else 0.0) + n * cost.local,
                        cost.central, cost.delta)
    return out


def compose(entries: Iterable[DayEntry], delta: float) -> float:
    """Central ε of every report in ``entries``, composed (PLD, ``dp-accounting``).

    ``delta``: the total δ to report ε at; it must exceed the sum of the reports' δ.
    Pure-ε reports (δ = 0) compose by their privacy loss distributions too, which
    for a handful of reports is the sum and for many is tighter (advanced composition).
    """
    from dp_accounting.pld import common
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    groups: dict[tuple[float, float], int] = {}
    for e in entries:
        if e.reports:
            key = (round(e.central_per_report, 9), e.delta_per_report)
            groups[key] = groups.get(key, 0) + e.reports
    if not groups:
        return 0.0
    spent_delta = sum(d * n for (_, d), n in groups.items())
    if spent_delta >= delta:
        return math.inf
    total = None
    for (eps, d), n in sorted(groups.items()):
        if not math.isfinite(eps):
            return math.inf
        one = pld_lib.from_privacy_parameters(common.DifferentialPrivacyParameters(eps, d),
                                              value_discretization_interval=1e-3)
        part = one.self_compose(n)
        total = part if total is None else total.compose(part)
    assert total is not None
    return float(total.get_epsilon_for_delta(delta - spent_delta))
