"""The seam between the admin API and federation (aggregator / hub).

Federation publishes an object with this shape as the node resource
``"federation"`` (``ctx.publish("federation", obj)`` when its actor starts,
``ctx.withdraw`` when it stops). The admin API looks it up per request; while it
is absent, the federation endpoints answer 503 "federation not running on this
node" and ``GET /api/v1/federation`` says ``available: false``. The API never
invents a number federation did not give it.

Every method is called from the admin server's threads: it must be thread-safe,
return quickly (``trigger`` starts a round, it does not wait for it) and raise
``omega.errors.OmegaError`` subclasses for refusals (their message is shown).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

#: The resource name federation publishes itself under.
RESOURCE = "federation"


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
        """Start a round now (``POST /api/v1/federation/trigger``); e.g. {``round``: 7}."""
        ...

    def add_content(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Add titles to the hub's content registry (``POST /api/v1/content``).

        Each item is validated by the API already: ``id`` str, ``title`` str,
        ``metadata`` dict of str → str | int | float | bool | list[str] (maybe empty),
        and at most one of ``embedding`` (list of 384 finite floats) or ``text`` (str
        for the hub to embed). Returns e.g. {``added``: 1, ``updated``: 0}.
        """
        ...
