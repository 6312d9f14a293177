"""The seam between the admin API and federation (aggregator / hub).

Federation publishes an object with this shape as the node resource
``"federation"`` (``ctx.publish("federation", obj)`` when its actor starts,
``ctx.withdraw`` when it stops). The admin API looks it up per request; while it
is absent, the federation endpoints answer 503 "federation not running on this
node" and ``GET /api/v1/federation`` says ``available: false``. The API never
invents a number federation did not give it.

Every method is called from the admin server's threads: it must be thread-safe,
return quickly (``trigger`` starts a round, it does not wait for it) and raise
``omega.errors.OmegaError`` subclasses for refusals (their message is shown, 409).
Only ``status`` is required: a role whose federation has no ``add_content`` (a
shard, an aggregator) answers 409 for it. ``federation_view`` reads ``status()``
leniently: the figures under the names below or their ``SYNONYMS``, whatever is
missing shown as null, and the whole dict as ``detail``. A ``raft`` dict in it (the
hub's Raft group: ``role``, ``term``, ...) is what ``GET /api/v1/node/raft`` shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

#: The resource name federation publishes itself under.
RESOURCE = "federation"
#: Releases the API shows (newest last).
MAX_RELEASES = 50
#: Each figure the API shows, and the names federation's status may give it under.
SYNONYMS: dict[str, tuple[tuple[str, ...], type]] = {
    "rounds": (("rounds", "releases_spent", "rounds_completed"), int),
    "epsilon_spent": (("epsilon_spent",), float),
    "epsilon_budget": (("epsilon_budget",), float),
    "reports_received": (("reports_received", "reports_opened"), int),
    "last_round_at": (("last_round_at",), float),
    "next_round_at": (("next_round_at",), float),
    "content_items": (("content_items", "titles"), int),
}


@runtime_checkable
class Federation(Protocol):
    def status(self) -> dict[str, Any]:
        """What the node knows of federation rounds. Keys the API shows (each optional):

        - ``rounds`` (int): rounds completed on this node;
        - ``epsilon_spent`` (float): total ε of the releases so far;
        - ``epsilon_budget`` (float | None);
        - ``reports_received`` (int): sealed reports received (hub: opened);
        - ``last_round_at`` (float, unix seconds) and ``next_round_at``;
        - ``releases``: list of {``version`` int, ``at`` float unix s, ``epsilon``
          float, ``titles`` int, ``pairs`` int}, newest last (the API shows the last 50);
        - ``trends``: {region: [{``content_id`` str, ``score`` float}, ...]};
        - ``content_items`` (int): titles in the content registry (hub).
        """
        ...

    def trigger(self) -> dict[str, Any]:
        """Start a round now (``POST /api/v1/federation/trigger``); e.g. {``round``: 7}.
        The hub's also takes a release ``version`` (the body's ``version``), which
        makes asking again after a lost answer safe."""
        ...

    def add_content(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Add titles to the hub's content registry (``POST /api/v1/content``).

        Each item is validated by the API already: ``id`` str, ``title`` str,
        ``metadata`` dict of str → str | int | float | bool | list[str] (maybe empty),
        and at most one of ``embedding`` (list of 384 finite floats) or ``text`` (str
        for the hub to embed). Returns e.g. {``added``: 1, ``updated``: 0}.
        """
        ...


def _number(value: Any, kind: type) -> float | int | None:
    """A finite number, or None (missing, unparseable, or not finite)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return int(x) if kind is int else x


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: non-finite floats → None, other types → str."""
    if depth > 12:
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _release(r: Any) -> dict[str, Any] | None:
    if not isinstance(r, dict) or _number(r.get("version"), int) is None:
        return None
    return {"version": _number(r.get("version"), int),
            "at": _number(r.get("at", r.get("time")), float),
            "epsilon": _number(r.get("epsilon"), float),
            "titles": _number(r.get("titles"), int),
            "pairs": _number(r.get("pairs"), int)}


def federation_view(raw: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /api/v1/federation`` shows of ``Federation.status()``: the figures
    under their API names (None when federation did not give them — never made up),
    releases (``releases``, else ``last_release``), trends, and everything it said
    (``detail``, made JSON-safe)."""
    out: dict[str, Any] = {"available": True}
    for key, (names, kind) in SYNONYMS.items():
        found = next((raw[n] for n in names if n in raw), None)
        out[key] = _number(found, kind)
    eps = raw.get("epsilon_spent")
    out["epsilon_unbounded"] = eps == "inf" or (isinstance(eps, float) and math.isinf(eps))
    releases = raw.get("releases")
    if not isinstance(releases, list):
        last = raw.get("last_release")
        releases = [last] if isinstance(last, dict) else []
    out["releases"] = [r for r in (_release(x) for x in releases[-MAX_RELEASES:]) if r]
    trends = raw.get("trends") if isinstance(raw.get("trends"), dict) else {}
    out["trends"] = {
        str(region): [{"content_id": str(t["content_id"]), "score": score}
                      for t in items[:20] if isinstance(t, dict) and "content_id" in t
                      and (score := _number(t.get("score"), float)) is not None]
        for region, items in (trends or {}).items() if isinstance(items, list)
    }
    out["detail"] = json_safe(raw)
    return out
