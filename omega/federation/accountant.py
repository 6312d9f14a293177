"""Privacy accounting of the hub's releases, with Google's ``dp-accounting`` library.

Each release is one Gaussian mechanism over the co-view sums: noise of standard
deviation ``sigma`` on counts whose L2 sensitivity (what one TV can change) is
``sensitivity``; its noise multiplier is ``sigma / sensitivity``. Releases
compose: :class:`PrivacyAccountant` records every multiplier and asks a
privacy-loss-distribution accountant (``dp_accounting.pld.PLDAccountant``, tight
for Gaussian composition) for the total ε at a δ. Nothing here is hand-written
composition maths.

:func:`gaussian_sigma` calibrates one release: the smallest σ for which a
Gaussian mechanism of L2 sensitivity 1 is (ε, δ)-DP (the analytic Gaussian
mechanism, Balle & Wang 2018, as ``dp_accounting.gaussian_mechanism`` computes it).
"""

from __future__ import annotations

import math
from functools import lru_cache

import msgpack

__all__ = ["AccountantError", "PrivacyAccountant", "gaussian_epsilon", "gaussian_sigma"]

_FORMAT = 1


class AccountantError(ValueError):
    """A bad spend, δ, or bytes that are not an accountant. Nothing changed."""


@lru_cache(maxsize=256)
def gaussian_sigma(epsilon: float, delta: float) -> float:
    """σ per unit of L2 sensitivity for one (ε, δ)-DP Gaussian release."""
    from dp_accounting import gaussian_mechanism

    if not (math.isfinite(epsilon) and epsilon > 0):
        raise AccountantError(f"epsilon must be a positive number, got {epsilon!r}")
    if not 0 < delta < 1:
        raise AccountantError(f"delta must be in (0, 1), got {delta!r}")
    return float(gaussian_mechanism.get_sigma_gaussian(epsilon, delta))


def gaussian_epsilon(noise_multiplier: float, delta: float, count: int = 1) -> float:
    """ε at ``delta`` of ``count`` composed Gaussian releases of one noise multiplier."""
    acc = PrivacyAccountant()
    for _ in range(count):
        acc.spend(noise_multiplier, 1.0)
    return acc.epsilon(delta)


class PrivacyAccountant:
    """The releases made so far and their total ε (PLD accounting)."""

    def __init__(self) -> None:
        #: noise multiplier (σ / sensitivity) -> releases made with it; 0.0 = no noise.
        self._spent: dict[float, int] = {}

    @property
    def releases(self) -> int:
        return sum(self._spent.values())

    def spend(self, sigma: float, sensitivity: float) -> None:
        """Record one Gaussian release (``sigma`` 0: a release without noise, ε = ∞)."""
        if not (math.isfinite(sigma) and sigma >= 0):
            raise AccountantError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if not (math.isfinite(sensitivity) and sensitivity > 0):
            raise AccountantError(f"sensitivity must be a positive number, got {sensitivity!r}")
        multiplier = sigma / sensitivity
        self._spent[multiplier] = self._spent.get(multiplier, 0) + 1

    def epsilon(self, delta: float) -> float:
        """Total ε of every release so far at ``delta`` (0 before any; ∞ after a noiseless one)."""
        if not 0 < delta < 1:
            raise AccountantError(f"delta must be in (0, 1), got {delta!r}")
        return _epsilon(tuple(sorted(self._spent.items())), delta)

    def to_bytes(self) -> bytes:
        doc = {"format": _FORMAT, "spent": [[m, n] for m, n in sorted(self._spent.items())]}
        out: bytes = msgpack.packb(doc, use_bin_type=True)
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivacyAccountant:
        """An accountant from :meth:`to_bytes`; :class:`AccountantError` for anything else."""
        try:
            doc = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:
            raise AccountantError(f"not an accountant: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT \
                or not isinstance(doc.get("spent"), list):
            raise AccountantError("not an accountant (unknown format)")
        out = cls()
        for entry in doc["spent"]:
            if not (isinstance(entry, list) and len(entry) == 2):
                raise AccountantError("accountant: entries are [multiplier, count]")
            m, n = entry
            if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m) \
                    or m < 0 or isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise AccountantError(f"accountant: bad entry {entry!r}")
            out._spent[float(m)] = out._spent.get(float(m), 0) + n
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyAccountant):
            return NotImplemented
        return self._spent == other._spent

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PrivacyAccountant(releases={self.releases})"


@lru_cache(maxsize=64)
def _epsilon(spent: tuple[tuple[float, int], ...], delta: float) -> float:
    if not spent:
        return 0.0
    if any(m == 0.0 for m, _ in spent):
        return math.inf
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    acc = pld_privacy_accountant.PLDAccountant()
    for multiplier, count in spent:
        acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(multiplier),
                                                      count))
    return float(acc.get_epsilon(delta))
