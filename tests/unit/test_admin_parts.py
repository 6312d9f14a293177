"""Admin API parts without a node: tokens and roles, bodies, the OpenAPI document,
the shard watcher, settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from omega.errors import ConfigError
from omega.ops.http.auth import AuthError, Role, Tokens
from omega.ops.http.bodies import BadBody, parse_body
from omega.ops.http.openapi import dumps, openapi_document
from omega.ops.http.settings import AdminSettings
from omega.ops.http.watch import ShardWatcher
from omega.schema import SettingError, load

REPO = Path(__file__).resolve().parents[2]
TOKENS = Tokens({Role.READ: b"r" * 20, Role.OPERATOR: b"o" * 20, Role.ADMIN: b"a" * 20})


@pytest.mark.parametrize(("header", "needed", "status"), [
    (None, Role.READ, 401),
    ("", Role.READ, 401),
    ("Bearer", Role.READ, 401),
    ("Basic " + "r" * 20, Role.READ, 401),
    ("Bearer " + "x" * 20, Role.READ, 401),
    ("Bearer " + "r" * 19, Role.READ, 401),
    ("Bearer " + "r" * 20, Role.OPERATOR, 403),
    ("Bearer " + "o" * 20, Role.ADMIN, 403),
])
def test_refusals(header: str | None, needed: Role, status: int) -> None:
    with pytest.raises(AuthError) as err:
        TOKENS.check(header, needed)
    assert err.value.status == status
    assert "r" * 19 not in str(err.value)  # a token never shows in a message


@pytest.mark.parametrize(("token", "needed", "role"), [
    (b"r" * 20, Role.READ, Role.READ),
    (b"o" * 20, Role.READ, Role.OPERATOR),
    (b"a" * 20, Role.OPERATOR, Role.ADMIN),
    (b"a" * 20, Role.ADMIN, Role.ADMIN),
])
def test_roles_include_the_weaker_ones(token: bytes, needed: Role, role: Role) -> None:
    assert TOKENS.check("bearer " + token.decode(), needed) is role


def test_tokens_from_secrets_refuse_weak_or_shared_ones() -> None:
    assert Tokens.from_secrets({}).by_role == {}
    with pytest.raises(ConfigError, match=r"secrets\.read_token.*at least 16"):
        Tokens.from_secrets({"read_token": b"short"})
    with pytest.raises(ConfigError, match="own token"):
        Tokens.from_secrets({"read_token": b"s" * 16, "admin_token": b"s" * 16})
    t = Tokens.from_secrets({"operator_token": b"o" * 16})
    assert t.role_of(b"o" * 16) is Role.OPERATOR and t.role_of(b"r" * 16) is None


GOOD = {"id": "m-1", "title": "Heat (1995)", "metadata": {"genres": ["Crime"], "year": 1995}}


@pytest.mark.parametrize(("body", "field"), [
    (b"", "<body>"),
    (b"{not json", "<body>"),
    (b"[]", "<body>"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "title"}).encode(), "title"),
    (json.dumps({**GOOD, "title": ""}).encode(), "title"),
    (json.dumps({**GOOD, "title": 7}).encode(), "title"),
    (json.dumps({**GOOD, "id": "has space"}).encode(), "id"),
    (json.dumps({**GOOD, "colour": "red"}).encode(), "colour"),
    (json.dumps({**GOOD, "embedding": [0.1] * 3}).encode(), "embedding"),
    (json.dumps({**GOOD, "embedding": [0.0] * 383 + [2.0]}).encode(), "embedding.383"),
    (json.dumps({**GOOD, "embedding": [0.0] * 384, "text": "x"}).encode(), "text"),
    (json.dumps({**GOOD, "metadata": {"k": {"nested": 1}}}).encode(), "metadata.k"),
    (b'{"id": "a", "title": "t", "metadata": {"x": NaN}}', "<body>"),
    (b"{" + b'"a":' * 100 + b"1" + b"}" * 100, "<body>"),
    (b"{" + b" " * 70_000 + b"}", "<body>"),
])
def test_bad_content_bodies_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(BadBody) as err:
        parse_body(body, "ContentItem")
    assert err.value.field == field


def test_good_bodies_pass() -> None:
    assert parse_body(json.dumps(GOOD).encode(), "ContentItem") == GOOD
    emb = {**GOOD, "embedding": [1 / math.sqrt(384)] * 384}
    assert parse_body(json.dumps(emb).encode(), "ContentItem")["embedding"][0] > 0
    assert parse_body(b'{"device_ids": ["tv-1", "tv:2"]}', "DeviceIds")["device_ids"] == [
        "tv-1", "tv:2"]
    with pytest.raises(BadBody) as err:
        parse_body(b'{"device_ids": []}', "DeviceIds")
    assert err.value.field == "device_ids"


def test_committed_openapi_document_is_the_served_one() -> None:
    committed = (REPO / "docs" / "openapi.json").read_text()
    assert committed == dumps(openapi_document()), (
        "docs/openapi.json is stale: python -m omega.ops.http.openapi > docs/openapi.json")


def test_openapi_document_is_valid_openapi_31() -> None:
    from jsonschema import Draft202012Validator

    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["x-omega-role"] in ("none", "read", "operator", "admin"), (path, method)
            assert ("401" in op["responses"]) == (op["x-omega-role"] != "none")


def test_settings_check_listen_and_urls() -> None:
    assert load(AdminSettings, {"listen": "127.0.0.1:7510"}).host_port() == ("127.0.0.1", 7510)
    assert load(AdminSettings, {"listen": "[::1]:80"}).host_port() == ("::1", 80)
    assert not AdminSettings().enabled
    for bad in ({"listen": "7510"}, {"listen": "host:99999"}, {"shards": ["tcp://x:1"]},
                {"poll_s": 0}, {"write_burst": 0}):
        with pytest.raises(SettingError) as err:
            load(AdminSettings, bad)
        assert err.value.key.split("[")[0] in bad


def test_watcher_lists_unreachable_shards_without_numbers() -> None:
    answers: dict[str, Any] = {
        "http://a/api/v1/shards": {"shards": [{"id": "a", "group": "g", "region": "eu",
                                               "devices": 5, "devices_active": 2,
                                               "status": "ok"}]},
        "http://a/api/v1/shards/a/stats": {"id": "a", "reports_received": 9},
    }

    def fetch(url: str, token: bytes | None, timeout: float) -> Any:
        assert token == b"t" * 16
        if url not in answers:
            raise OSError("connection refused")
        return answers[url]

    w = ShardWatcher(["http://a/", "http://b"], b"t" * 16, wall=lambda: 100.0, fetch=fetch)
    assert [s["status"] for s in w.shards()] == ["unreachable", "unreachable"]
    w.poll()
    a, b = w.shards()
    assert a["status"] == "ok" and a["devices"] == 5 and a["last_seen"] == 100.0
    assert b["status"] == "unreachable" and b["devices"] is None and b["error"] == "OSError"
    assert w.stats("a") == {"id": "a", "reports_received": 9}
    assert w.stats("b") is None
    del answers["http://a/api/v1/shards"]
    w.poll()
    a, _ = w.shards()
    assert a["status"] == "unreachable" and a["last_seen"] == 100.0  # when it was last seen


def test_grafana_dashboard_uses_only_known_metrics_and_every_seed_name() -> None:
    import re

    from omega.ops.metrics import names as N

    dash = json.loads((REPO / "docs" / "grafana" / "omega-constellation.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:omega|constellation)_[a-z_]+)", e)}
    known = {v for k, v in vars(N).items() if k.isupper() and isinstance(v, str)}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    base = {next((u[: -len(s)] for s in suffixes if u.endswith(s) and u[: -len(s)] in known), u)
            for u in used}
    assert base <= known, base - known
    assert set(N.SEED_NAMES) <= base


def test_fleet_aggregate_sums_every_sample() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from omega.ops.metrics.fleet import aggregate
    from omega.ops.metrics.histogram import FastHistogram

    texts = []
    for n in (1, 3):
        h = FastHistogram("omega_brain_inference_ms", "x", (5.0, 10.0))
        for _ in range(n):
            h.observe(4.0)
        h.observe(20.0)
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        class C:
            def collect(self, h: FastHistogram = h, n: int = n) -> Any:
                yield h.family()
                yield CounterMetricFamily("omega_brain_recommendations_served", "x", value=n)
                yield GaugeMetricFamily("omega_brain_memory_mb", "x", value=100.0)

        reg = CollectorRegistry()
        reg.register(C())  # type: ignore[arg-type]
        texts.append(generate_latest(reg).decode())
    fleet = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(aggregate(texts)) for s in f.samples}
    assert fleet[("omega_brain_inference_ms_bucket", (("le", "5.0"),))] == 4
    assert fleet[("omega_brain_inference_ms_bucket", (("le", "+Inf"),))] == 6
    assert fleet[("omega_brain_inference_ms_count", ())] == 6
    assert fleet[("omega_brain_inference_ms_sum", ())] == 4 * 4.0 + 2 * 20.0
    assert fleet[("omega_brain_recommendations_served_total", ())] == 4
    assert fleet[("omega_brain_memory_mb", ())] == 200.0
    assert fleet[("omega_fleet_tvs", ())] == 2


def test_scan_cache_follows_the_cost_of_the_scan() -> None:
    from omega.ops.http.views import _Cached

    t = [0.0]
    calls = [0]

    def scan(cost: float) -> Any:
        def run() -> int:
            calls[0] += 1
            t[0] += cost  # the scan takes this long
            return calls[0]
        return run

    c = _Cached(lambda: t[0], min_ttl=1.0, cost_factor=20.0)
    assert c.get(scan(0.001)) == 1
    t[0] += 0.5
    assert c.get(scan(0.001)) == 1  # fresh enough
    t[0] += 0.6
    assert c.get(scan(0.5)) == 2  # older than a second: scanned again, and it took 0.5 s
    t[0] += 5.0
    assert c.get(scan(0.5)) == 2  # a 0.5 s scan is reused for 10 s
    t[0] += 5.0
    assert c.get(scan(0.001)) == 3


def test_federation_view_reads_what_federation_gives_and_invents_nothing() -> None:
    from omega.ops.http.federation import federation_view

    hub_like = {"role": "hub", "releases_spent": 3, "titles": 40, "epsilon_spent": 1.5,
                "last_release": {"version": 7, "time": 1.7e9, "pairs": 12},
                "keys": [{"key_id": 1, "retired_ms": None}], "raft": {"role": "leader"}}
    v = federation_view(hub_like)
    assert v["rounds"] == 3 and v["content_items"] == 40 and v["epsilon_spent"] == 1.5
    assert v["releases"] == [{"version": 7, "at": 1.7e9, "epsilon": None, "titles": None,
                              "pairs": 12}]
    assert v["reports_received"] is None and v["next_round_at"] is None  # not given
    assert v["detail"]["keys"] == [{"key_id": 1, "retired_ms": None}]
    assert v["epsilon_unbounded"] is False
    inf = federation_view({"epsilon_spent": "inf", "trends": {"eu": [
        {"content_id": "m1", "score": float("nan")}, {"content_id": "m2", "score": 2}]}})
    assert inf["epsilon_spent"] is None and inf["epsilon_unbounded"] is True
    assert inf["trends"] == {"eu": [{"content_id": "m2", "score": 2.0}]}
    shard_like = federation_view({"role": "shard", "reports_forwarded": 5, "x": float("inf")})
    assert shard_like["rounds"] is None and shard_like["releases"] == []
    assert shard_like["detail"] == {"role": "shard", "reports_forwarded": 5, "x": None}
    json.dumps(shard_like, allow_nan=False)
