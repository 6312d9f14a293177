"""The admin app over real nodes started in this process (a single-replica shard with
PySyncObj + LMDB + nng, a hub), called with Starlette's TestClient.

The role × endpoint matrix: every endpoint, with no token, an unknown token and
each role's token, on a shard and on a hub — every cell asserted.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from omega.client import DeviceClient
from omega.errors import OmegaError
from omega.ops.http.app import build_app
from omega.ops.http.openapi import openapi_document
from omega.ops.http.wiring import admin_for
from omega.ops.metrics import names as N
from tests.helpers_admin import (
    ROLE_TOKEN,
    TOKENS,
    InProcess,
    device_key,
    hub_toml,
    in_process_node,
    shard_toml,
)
from tests.nodeproc import wait_for

LEVEL = {"none": 0, "read": 1, "operator": 2, "admin": 3}
# With an embedding, so that the hub needs no model to register it.
CONTENT = {"id": "m-1", "title": "Heat (1995)", "metadata": {"year": 1995},
           "embedding": [1 / 384 ** 0.5] * 384}


class FakeFederation:
    """Stands in for federation, which is being built on other branches: only here to
    show that the hook works (the API must never invent figures itself)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.rounds = 0

    def status(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "epsilon_spent": 0.5 * self.rounds,
                "reports_received": 10, "content_items": len(self.items),
                "releases": [{"version": i, "at": 1.0e9 + i, "epsilon": 0.5, "titles": 3,
                              "pairs": 4} for i in range(self.rounds)],
                "trends": {"eu": [{"content_id": "m-1", "score": 2.5}]}}

    def trigger(self) -> dict[str, Any]:
        self.rounds += 1
        return {"round": self.rounds}

    def add_content(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        self.items.extend(items)
        return {"added": len(items), "updated": 0}


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    tmp = tmp_path_factory.mktemp("shard")
    cfg, listen = shard_toml(tmp, write_per_min=100_000, write_burst=1000, region="eu")
    with in_process_node("shard", cfg) as node:
        node.ctx.publish("device_address", listen)
        yield node


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    tmp = tmp_path_factory.mktemp("hub")
    with in_process_node("hub", hub_toml(tmp, write_per_min=100_000, write_burst=1000)) as node:
        yield node


def client(node: InProcess) -> TestClient:
    return TestClient(build_app(admin_for(node.ctx)))


def headers(who: str) -> dict[str, str]:
    if who == "none":
        return {}
    token = ROLE_TOKEN.get(who, b"not-a-token-of-this-node-000")
    return {"Authorization": "Bearer " + token.decode()}


def call(c: TestClient, method: str, path: str, who: str) -> Any:
    path = path.replace("{shard_id}", "shard-a")
    body = None
    if path.endswith("/content"):
        body = CONTENT
    elif path.endswith(("/register", "/revoke")):
        body = {"device_ids": ["tv-matrix"]}
    return c.request(method, path, headers=headers(who), json=body)


#: What a caller with enough rights gets, per node (the real federation actors run:
#: a shard's forwards and follows, so it has no content registry).
ALLOWED = {
    "shard": {"/api/v1/shards/{shard_id}/stats": 200, "/api/v1/node/raft": 200,
              "/api/v1/devices/register": 200, "/api/v1/devices/revoke": 200,
              "/api/v1/content": 409, "/api/v1/federation/trigger": 202},
    "hub": {"/api/v1/shards/{shard_id}/stats": 404, "/api/v1/node/raft": 200,
            "/api/v1/devices/register": 404, "/api/v1/devices/revoke": 404,
            "/api/v1/content": 201, "/api/v1/federation/trigger": 202},
}


@pytest.mark.parametrize("node_name", ["shard", "hub"])
def test_role_by_endpoint_matrix(node_name: str, request: pytest.FixtureRequest) -> None:
    node: InProcess = request.getfixturevalue(node_name)
    c = client(node)
    doc = openapi_document()
    roles = c.app.state.roles  # type: ignore[attr-defined]
    cells = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            needed = op["x-omega-role"]
            assert roles[(path, method.upper())] == needed, (path, method)
            for who in ("none", "stranger", "read", "operator", "admin"):
                r = call(c, method.upper(), path, who)
                if needed == "none":
                    expected = 200
                elif who in ("none", "stranger"):
                    expected = 401
                elif LEVEL[who] < LEVEL[needed]:
                    expected = 403
                else:
                    expected = ALLOWED[node_name].get(path, 200)
                assert r.status_code == expected, (node_name, method, path, who, r.text)
                if expected in (401, 403):
                    assert set(r.json()) == {"error", "detail"}, r.text  # never data
                    if expected == 401:
                        assert r.headers["www-authenticate"] == "Bearer"
                cells += 1
    assert cells == 5 * 15


@contextlib.contextmanager
def federation_replaced(node: InProcess, fed: Any) -> Iterator[Any]:
    """The node's federation resource replaced by ``fed`` (None: withdrawn), then restored."""
    real = node.ctx.resource("federation")
    if real is not None:
        node.ctx.withdraw("federation", real)
    if fed is not None:
        node.ctx.publish("federation", fed)
    try:
        yield real
    finally:
        if fed is not None:
            node.ctx.withdraw("federation", fed)
        if real is not None:
            node.ctx.publish("federation", real)


def test_federation_hook(hub: InProcess) -> None:
    c = client(hub)
    read, op = headers("read"), headers("operator")
    # The hub's real federation actor is plugged in.
    st = c.get("/api/v1/federation", headers=read).json()
    assert st["available"] is True and st["detail"]["role"] == "hub"
    with federation_replaced(hub, None):
        assert c.get("/api/v1/federation", headers=read).json() == {
            "available": False, "reason": "federation not running on this node (role hub)"}
        r = c.post("/api/v1/federation/trigger", headers=op)
        assert r.status_code == 409 and r.json()["error"] == "federation_unavailable"
    fed = FakeFederation()
    with federation_replaced(hub, fed):
        r = c.post("/api/v1/federation/trigger", headers=op)
        assert r.status_code == 202 and r.json() == {"accepted": True, "result": {"round": 1}}
        r = c.post("/api/v1/content", headers=op, json=CONTENT)
        assert r.status_code == 201 and r.json()["id"] == "m-1"
        assert fed.items == [CONTENT]
        text_item = {"id": "m-2", "title": "Ronin", "metadata": {}, "text": "a heist in Paris"}
        assert c.post("/api/v1/content", headers=op, json=text_item).status_code == 201
        assert fed.items[1]["metadata"] == {"description": "a heist in Paris"}
        st = c.get("/api/v1/federation", headers=read).json()
        assert st["available"] and st["rounds"] == 1 and st["epsilon_spent"] == 0.5
        assert st["releases"][0]["version"] == 0
        assert st["trends"] == {"eu": [{"content_id": "m-1", "score": 2.5}]}
        text = c.get("/metrics").text
        assert "omega_federation_rounds_total 1.0" in text


def test_a_release_asked_by_version_is_made_once(hub: InProcess, shard: InProcess) -> None:
    """``{"version": N}``: the next release, or the last one answered as made; any other
    N is a conflict, and a version for another role than the hub is refused."""
    c, op = client(hub), headers("operator")

    def version() -> int:
        return int(c.get("/api/v1/federation", headers=headers("read"))
                   .json()["detail"]["counters"]["version"])

    v = version()
    r = c.post("/api/v1/federation/trigger", headers=op, json={"version": v + 5})
    assert r.status_code == 409 and f"the next one ({v + 1})" in r.json()["detail"], r.text
    for bad in ({"version": "7"}, {"version": 0}, {"version": 1.5}, {"release": 1}, [1]):
        r = c.post("/api/v1/federation/trigger", headers=op, json=bad)
        assert r.status_code == 422 and r.json()["error"] == "invalid_body", bad
    rotated = hub.ctx.resource("federation").rotate_key()  # announced: release v + 1
    assert version() == v + 1
    again = c.post("/api/v1/federation/trigger", headers=op, json={"version": v + 1})
    assert again.status_code == 202 and again.json()["result"]["again"] is True, again.text
    assert again.json()["result"]["key_id"] == rotated["key_id"]
    idle = c.post("/api/v1/federation/trigger", headers=op, json={"version": v + 2})
    assert idle.status_code == 202 and idle.json()["result"]["released"] is False  # no news
    assert version() == v + 1
    r = client(shard).post("/api/v1/federation/trigger", headers=op, json={"version": 1})
    assert r.status_code == 409 and r.json()["error"] in ("not_hub", "federation_unavailable")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/content", {"title": "t", "metadata": {}}, "id"),
    ("/api/v1/content", {**CONTENT, "metadata": []}, "metadata"),
    ("/api/v1/content", {**CONTENT, "id": "bad\n"}, "id"),
    ("/api/v1/devices/revoke", {"device_ids": "tv-1"}, "device_ids"),
    ("/api/v1/devices/revoke", {"device_ids": ["ok", "no spaces"]}, "device_ids.1"),
    ("/api/v1/devices/register", {"devices": ["tv-1"]}, "devices"),
])
def test_malformed_bodies_are_422_naming_the_field(shard: InProcess, path: str, body: Any,
                                                   field: str) -> None:
    c = client(shard)
    before = shard.ctx.resource("shard").state_hash()
    r = c.post(path, headers=headers("admin"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_body" and r.json()["field"] == field
    # No token, or too weak a role: refused before the body is even read.
    assert c.post(path, json=body).status_code == 401
    if path.endswith("revoke"):
        assert c.post(path, headers=headers("operator"), json=body).status_code == 403
    assert shard.ctx.resource("shard").state_hash() == before  # nothing changed


def test_not_json_and_nan_are_422(shard: InProcess) -> None:
    c = client(shard)
    for raw in (b"{", b'{"device_ids": [NaN]}', b"", b"null"):
        r = c.post("/api/v1/devices/revoke", headers={**headers("admin"),
                                                      "Content-Type": "application/json"},
                   content=raw)
        assert r.status_code == 422, raw
        assert r.json()["field"] == "<body>"


def test_writes_are_rate_limited(tmp_path: Path) -> None:
    with in_process_node("hub", hub_toml(tmp_path, write_per_min=1, write_burst=2)) as node:
        c = client(node)
        codes = [c.post("/api/v1/federation/trigger", headers=headers("operator")).status_code
                 for _ in range(3)]
        assert codes == [202, 202, 429]
        r = c.post("/api/v1/federation/trigger", headers=headers("operator"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["retry_after_s"] > 0
        # Reads are not limited.
        assert all(c.get("/api/v1/federation", headers=headers("read")).status_code == 200
                   for _ in range(5))


def test_revoked_device_is_refused_and_stats_follow_pushes(shard: InProcess) -> None:
    c = client(shard)
    listen = shard.ctx.resource("device_address")
    ids = [f"tv-stats-{i}" for i in range(4)]
    for d in ids:
        with DeviceClient(listen, d, device_key(d)) as dev:
            dev.push([b"r" * 64])
    st = c.get("/api/v1/shards/shard-a/stats", headers=headers("read")).json()
    assert st["id"] == "shard-a" and st["region"] == "eu" and st["status"] == "ok"
    assert st["reports_received"] >= 4 and st["pushes_applied"] >= 4
    assert st["storage_bytes"] > 0 and st["raft"]["role"] == "leader"
    listing = c.get("/api/v1/shards", headers=headers("read")).json()
    assert listing["shards"][0]["id"] == "shard-a" and listing["watched"] == 0
    r = c.post("/api/v1/devices/revoke", headers=headers("admin"), json={"device_ids": [ids[0]]})
    assert r.status_code == 200 and r.json() == {"action": "revoke", "devices": 1}
    with DeviceClient(listen, ids[0], device_key(ids[0])) as dev, pytest.raises(OmegaError) as err:
        dev.push([b"r" * 64])
    assert "unauthorized" in str(err.value) or "revoked" in str(err.value)
    r = c.post("/api/v1/devices/register", headers=headers("admin"), json={"device_ids": [ids[0]]})
    assert r.status_code == 200
    regions = c.get("/api/v1/devices/regions", headers=headers("read")).json()["regions"]
    assert regions[0]["region"] == "eu" and regions[0]["shards"] == 1


def test_metrics_parse_and_carry_the_seed_names(shard: InProcess) -> None:
    c = client(shard)
    listen = shard.ctx.resource("device_address")
    with DeviceClient(listen, "tv-metrics", device_key("tv-metrics")) as dev:
        dev.push([b"r" * 64])
        dev.pull(0, "eu")
    text = c.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (N.DEVICES_ACTIVE, N.SYNC_LATENCY_MS, N.PATTERNS_RECEIVED, N.SHARD_HEALTH,
                 N.SUPERVISOR_RESTARTS, N.RAFT_TERM, N.RAFT_COMMIT_INDEX,
                 N.RAFT_LEADER_CHANGES, N.GROUP_COMMIT_BATCHES, N.REJECTED, N.REQUESTS):
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[(N.SHARD_HEALTH, (("shard", "shard-a"),))] == 1.0
    assert samples[(N.SYNC_LATENCY_MS + "_count", (("kind", "push"),))] >= 1
    assert samples[(N.SYNC_LATENCY_MS + "_count", (("kind", "read"),))] >= 1
    assert samples[(N.PATTERNS_RECEIVED + "_total", ())] >= 1
    assert samples[(N.DEVICES_ACTIVE, ())] >= 1
    assert samples[(N.RAFT_TERM, ())] >= 1
    assert samples[(N.SUPERVISOR_RESTARTS + "_total", (("child", "shard.store"),))] == 0


def test_tree_and_raft(shard: InProcess) -> None:
    c = client(shard)
    tree = c.get("/api/v1/node/tree", headers=headers("read")).json()
    assert tree["name"] == "shard" and [ch["name"] for ch in tree["children"]][:2] == [
        "store", "sync"]
    raft = c.get("/api/v1/node/raft", headers=headers("read")).json()
    assert raft["role"] == "leader" and raft["term"] >= 1


def test_tokens_are_never_logged(shard: InProcess, caplog: pytest.LogCaptureFixture) -> None:
    c = client(shard)
    caplog.set_level(logging.DEBUG)
    c.get("/api/v1/shards", headers={"Authorization": "Bearer wrong-token-abcdef-123456"})
    c.get("/api/v1/shards", headers=headers("read"))
    c.post("/api/v1/devices/register", headers=headers("admin"), json={"device_ids": ["x"]})
    text = caplog.text + json.dumps([r.__dict__.get("fields") for r in caplog.records])
    assert "admin request refused" in caplog.text
    for token in [*TOKENS.values(), b"wrong-token-abcdef-123456"]:
        assert token.decode() not in text


def test_dashboard_needs_a_token_and_totals_add_up(shard: InProcess) -> None:
    c = client(shard)
    page = c.get("/dashboard")
    assert page.status_code == 200 and "Omega constellation" in page.text
    assert "shard-a" not in page.text  # the page itself carries no data
    assert c.get("/api/v1/dashboard").status_code == 401
    view = admin_for(shard.ctx).view
    view.sample()
    d = wait_for(lambda: (c.get("/api/v1/dashboard", headers=headers("read")).json()), 5,
                 "dashboard data")
    assert d["node"]["role"] == "shard" and d["totals"]["devices"] >= 1
    # The shard's federation actor (forwarding, following releases) reports itself.
    assert d["federation"]["available"] is True and d["federation"]["detail"]["role"] == "shard"


class ForwarderOnly:
    """A role's federation with status and trigger but no content registry, whose
    status carries its Raft group (as the hub's does)."""

    def status(self) -> dict[str, Any]:
        return {"role": "aggregator", "batches_forwarded": 2,
                "raft": {"role": "leader", "term": 3, "leader": "127.0.0.1:1",
                         "commit_index": 9, "applied_index": 9}}

    def trigger(self) -> dict[str, Any]:
        return {"forward": 1}


def test_partial_federation_and_its_raft_group(hub: InProcess) -> None:
    c = client(hub)
    fed = ForwarderOnly()
    with federation_replaced(hub, fed):
        r = c.post("/api/v1/content", headers=headers("operator"), json=CONTENT)
        assert r.status_code == 409 and "has no add_content" in r.json()["detail"]
        r = c.post("/api/v1/federation/trigger", headers=headers("operator"))
        assert r.status_code == 202 and r.json()["result"] == {"forward": 1}
        st = c.get("/api/v1/federation", headers=headers("read")).json()
        assert st["available"] and st["rounds"] is None
        assert st["detail"]["batches_forwarded"] == 2
        raft = c.get("/api/v1/node/raft", headers=headers("read")).json()
        assert raft["role"] == "leader" and raft["term"] == 3
    with federation_replaced(hub, None):
        assert c.get("/api/v1/node/raft", headers=headers("read")).status_code == 404
