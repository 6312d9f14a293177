"""The admin API's OpenAPI 3.1 document: the one source of its routes, roles and schemas.

The app serves it (``GET /api/v1/openapi.json``), validates request bodies
against its component schemas (``bodies.py``), and the repository keeps a copy
(``docs/openapi.json``; ``python -m omega.ops.http.openapi > docs/openapi.json``
rewrites it) that a test compares with this one.

Each operation names the role it needs in ``x-omega-role`` (``none`` for health
and metrics, which load balancers and scrapers call without a token).
"""

from __future__ import annotations

import json
from typing import Any

from omega import __version__

API = "/api/v1"
#: The content id / device id alphabet of the wire protocol (omega.protocol.checks.ident).
ID_PATTERN = "^[A-Za-z0-9._:-]+$"
EMBEDDING_DIM = 384
MAX_DEVICE_IDS = 1000

_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None, *,
         extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required,
            "additionalProperties": extra}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({
        "error": {"type": "string", "description": "machine-readable code"},
        "detail": {"type": "string", "description": "what went wrong and what to do"},
        "field": {**_NULLABLE_STR, "description": "the body field at fault (422)"},
        "retry_after_s": {**_NULLABLE_NUM, "description": "when to retry (429)"},
        "leader": {**_NULLABLE_STR, "description": "Raft address of the leader (409)"},
    }, ["error", "detail"]),
    "Health": _obj({
        "status": {"type": "string", "enum": ["ok", "degraded", "stopping"]},
        "role": {"type": "string", "enum": ["shard", "aggregator", "hub"]},
        "name": {"type": "string"},
        "version": {"type": "string"},
        "uptime_s": {"type": "number", "minimum": 0},
    }),
    "ShardEntry": _obj({
        "id": {"type": "string", "description": "the replica's node name"},
        "group": {**_NULLABLE_STR, "description": "its Raft group (same on every replica)"},
        "region": _NULLABLE_STR,
        "devices": {**_NULLABLE_INT, "description": "devices that ever pushed to it"},
        "devices_active": {**_NULLABLE_INT,
                           "description": "pushed within [admin] active_window_s"},
        "status": {"type": "string", "enum": ["ok", "degraded", "stopping", "unreachable"],
                   "description": "ok: has a Raft leader with quorum; unreachable: a "
                                  "watched shard whose admin API did not answer"},
        "raft_role": _NULLABLE_STR,
        "leader": _NULLABLE_STR,
        "source": {**_NULLABLE_STR, "description": "null: this node; else the watched URL"},
        "last_seen": {**_NULLABLE_NUM, "description": "unix s of the last good poll"},
        "error": {**_NULLABLE_STR, "description": "why the last poll failed"},
    }, ["id", "region", "devices", "status"]),
    "ShardList": _obj({
        "shards": {"type": "array", "items": _ref("ShardEntry")},
        "watched": {"type": "integer", "minimum": 0,
                    "description": "shard admin APIs this node polls ([admin] shards)"},
    }),
    "ShardStats": _obj({
        "id": {"type": "string"},
        "group": {"type": "string"},
        "region": {"type": "string"},
        "status": {"type": "string", "enum": ["ok", "degraded", "stopping"]},
        "devices_total": {"type": "integer", "minimum": 0},
        "devices_active": {"type": "integer", "minimum": 0},
        "active_window_s": {"type": "number"},
        "reports_stored": {"type": "integer", "minimum": 0,
                           "description": "sealed reports waiting to be forwarded"},
        "reports_received": {"type": "integer", "minimum": 0},
        "pushes_applied": {"type": "integer", "minimum": 0},
        "sync_requests_per_min": {**_NULLABLE_NUM,
                                  "description": "over the last minute; null until two "
                                                 "samples exist"},
        "sync_latency_ms_avg": {**_NULLABLE_NUM,
                                "description": "mean device request latency over the last "
                                               "minute; null when metrics are off or idle"},
        "push_latency_ms_avg": {**_NULLABLE_NUM,
                                "description": "mean latency of accepted pushes (receipt to "
                                               "ack, Raft commit included) over the last "
                                               "minute; null when metrics are off or idle"},
        "rejected": {"type": "object", "additionalProperties": {"type": "integer"},
                     "description": "refused device requests by reason, since start"},
        "storage_bytes": {"type": "integer", "minimum": 0},
        "global_version": {"type": "integer", "minimum": 0},
        "group_commit": _obj({
            "batches": {"type": "integer"}, "items": {"type": "integer"},
            "mean_batch": {"type": "number"}, "largest_batch": {"type": "integer"}}),
        "raft": _obj({"role": {"type": "string"}, "term": {"type": "integer"},
                      "commit_index": {"type": "integer"}, "leader": _NULLABLE_STR}),
        "as_of": {"type": "number", "description": "unix s"},
    }),
    "Release": _obj({
        "version": {"type": "integer"}, "at": {**_NULLABLE_NUM, "description": "unix s"},
        "epsilon": _NULLABLE_NUM, "titles": _NULLABLE_INT, "pairs": _NULLABLE_INT},
        ["version"]),
    "Trend": _obj({"content_id": {"type": "string"}, "score": {"type": "number"}}),
    "Federation": {
        "type": "object",
        "description": "available=false (with reason) while federation does not run on "
                       "this node; then no other key is present",
        "properties": {
            "available": {"type": "boolean"},
            "reason": {"type": "string"},
            "rounds": _NULLABLE_INT,
            "epsilon_spent": {**_NULLABLE_NUM,
                              "description": "null when not given, or unbounded (see "
                                             "epsilon_unbounded)"},
            "epsilon_unbounded": {"type": "boolean",
                                  "description": "a release without noise was made"},
            "epsilon_budget": _NULLABLE_NUM,
            "reports_received": _NULLABLE_INT,
            "last_round_at": _NULLABLE_NUM,
            "next_round_at": _NULLABLE_NUM,
            "content_items": _NULLABLE_INT,
            "releases": {"type": "array", "items": _ref("Release"), "maxItems": 50},
            "trends": {"type": "object",
                       "additionalProperties": {"type": "array", "items": _ref("Trend")}},
            "detail": {"type": "object",
                       "description": "everything federation's status() said, as is"},
        },
        "required": ["available"],
        "additionalProperties": False,
    },
    "TreeNode": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "path": {"type": "string"},
            "kind": {"type": "string", "enum": ["supervisor", "worker"]},
            "state": {"type": "string"}, "restart": {"type": "string"},
            "restarts": {"type": "integer", "minimum": 0},
            "ask_failures": {"type": "integer", "minimum": 0},
            "last_exit": _NULLABLE_STR,
            "strategy": {"type": "string"},
            "children": {"type": "array", "items": _ref("TreeNode")},
        },
        "required": ["name", "path", "kind", "state", "restarts", "children"],
    },
    "RaftStatus": {
        "type": "object",
        "description": "omega.raft ReplicatedLmdb.status() plus the leader's device address",
        "properties": {
            "role": {"type": "string"}, "term": {"type": "integer"},
            "leader": _NULLABLE_STR, "commit_index": {"type": "integer"},
            "applied_index": {"type": "integer"}, "has_quorum": {"type": "boolean"},
        },
        "required": ["role", "term", "leader", "commit_index", "applied_index"],
    },
    "Regions": _obj({"regions": {"type": "array", "items": _obj({
        "region": {"type": "string"},
        "shards": {"type": "integer", "minimum": 0},
        "devices_total": {"type": "integer", "minimum": 0},
        "devices_active": {"type": "integer", "minimum": 0},
    })}}),
    "DeviceIds": {
        **_obj({"device_ids": {
            "type": "array", "minItems": 1, "maxItems": MAX_DEVICE_IDS,
            "items": {"type": "string", "minLength": 1, "maxLength": 31,
                      "pattern": ID_PATTERN}}}),
        "description": "device ids as the TVs send them (only keyed hashes are stored)",
    },
    "RegistryResult": _obj({
        "action": {"type": "string", "enum": ["register", "revoke"]},
        "devices": {"type": "integer", "minimum": 1}}),
    "ContentItem": {
        **_obj({
            "id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": ID_PATTERN},
            "title": {"type": "string", "minLength": 1, "maxLength": 256},
            "metadata": {"type": "object", "maxProperties": 32,
                         "propertyNames": {"maxLength": 64},
                         "additionalProperties": {"anyOf": [
                             {"type": "string", "maxLength": 1024},
                             {"type": "number"}, {"type": "boolean"},
                             {"type": "array", "maxItems": 32,
                              "items": {"type": "string", "maxLength": 256}}]}},
            "embedding": {"type": "array", "minItems": EMBEDDING_DIM,
                          "maxItems": EMBEDDING_DIM,
                          "items": {"type": "number", "minimum": -1, "maximum": 1}},
            "text": {"type": "string", "minLength": 1, "maxLength": 10_000,
                     "description": "when no embedding is given: a description the hub "
                                    "embeds with the title (kept as metadata.description "
                                    "unless that is set)"},
        }, ["id", "title", "metadata"]),
        "not": {"required": ["embedding", "text"]},
        "description": "one title; at most one of embedding and text",
    },
    "ContentAccepted": _obj({"id": {"type": "string"}, "result": {"type": "object"}}),
    "TriggerAccepted": _obj({"accepted": {"type": "boolean"}, "result": {"type": "object"}}),
    "TriggerRequest": {
        **_obj({"version": {"type": "integer", "minimum": 1, "maximum": 4294967295}}, []),
        "description": "hub only, optional: the release to make, the one after "
                       "last_release.version; asked again after a lost answer, it is "
                       "answered as made (result.again), not released twice; any other "
                       "version is 409",
    },
    "Dashboard": _obj({
        "node": _ref("Health"),
        "shards": {"type": "array", "items": _ref("ShardEntry")},
        "totals": _obj({
            "devices": {"type": "integer", "minimum": 0},
            "devices_active": {"type": "integer", "minimum": 0},
            "sync_requests_per_min": _NULLABLE_NUM,
            "sync_latency_ms_avg": _NULLABLE_NUM,
            "push_latency_ms_avg": _NULLABLE_NUM,
            "reports_received": {"type": "integer", "minimum": 0},
        }),
        "rejected": {"type": "object", "additionalProperties": {"type": "integer"}},
        "federation": _ref("Federation"),
        "as_of": {"type": "number"},
    }),
}

_ERR = {"application/json": {"schema": _ref("Error")}}


def _resp(description: str) -> dict[str, Any]:
    return {"description": description, "content": _ERR}


def _op(summary: str, role: str, ok: tuple[str, str, dict[str, Any] | None], *,
        body: str | None = None, body_required: bool = True,
        errors: dict[str, str] | None = None,
        params: list[dict[str, Any]] | None = None, tag: str = "admin") -> dict[str, Any]:
    code, description, schema = ok
    content: dict[str, Any]
    if schema is None:
        content = {"text/plain": {"schema": {"type": "string"}}}
    elif "text/html" in schema:
        content = schema
    else:
        content = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {code: {"description": description, "content": content}}
    if role != "none":
        responses["401"] = _resp("missing or unknown bearer token")
        responses["403"] = _resp(f"the token's role is below {role}")
    if body is not None:
        responses["422"] = _resp("malformed body; `field` names the field at fault")
        responses["429"] = {**_resp("write rate limit; retry after Retry-After seconds"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
    for c, d in (errors or {}).items():
        responses[c] = _resp(d)
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "x-omega-role": role,
                          "security": [] if role == "none" else [{"bearer": []}],
                          "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": body_required,
                             "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    op["operationId"] = summary.lower().replace(" ", "_").replace("'", "")
    return op


_SHARD_ID = [{"name": "shard_id", "in": "path", "required": True,
              "schema": {"type": "string", "minLength": 1, "maxLength": 64},
              "description": "as listed by GET /api/v1/shards"}]


def openapi_document() -> dict[str, Any]:
    """The document as served (and as committed in docs/openapi.json)."""
    paths: dict[str, Any] = {
        f"{API}/health": {"get": _op("Health", "none", ("200", "node health", _ref("Health")),
                                     tag="public")},
        f"{API}/shards": {"get": _op("List shards", "read",
                                     ("200", "this node's shard and the watched ones",
                                      _ref("ShardList")))},
        f"{API}/shards/{{shard_id}}/stats": {"get": _op(
            "Shard stats", "read", ("200", "one shard's figures", _ref("ShardStats")),
            params=_SHARD_ID, errors={"404": "no such shard here (nor watched with stats)"})},
        f"{API}/content": {"post": _op(
            "Add content", "operator", ("201", "added to the hub's content registry",
                                        _ref("ContentAccepted")),
            body="ContentItem",
            errors={"409": "no content registry on this node (federation not running)"})},
        f"{API}/federation": {"get": _op(
            "Federation status", "read",
            ("200", "rounds, releases, epsilon spent, trends — or available=false",
             _ref("Federation")))},
        f"{API}/federation/trigger": {"post": _op(
            "Trigger federation", "operator", ("202", "a round was started",
                                               _ref("TriggerAccepted")),
            body="TriggerRequest", body_required=False,
            errors={"409": "federation not running on this node; or a release version "
                           "that is neither the last one made nor the next, or given "
                           "to another role than the hub"})},
        f"{API}/node/tree": {"get": _op(
            "Supervision tree", "read", ("200", "actors, states, restart counts",
                                         _ref("TreeNode")),
            errors={"409": "the node is still starting"})},
        f"{API}/node/raft": {"get": _op(
            "Raft status", "read", ("200", "role, term, leader, indexes", _ref("RaftStatus")),
            errors={"404": "no Raft replica on this node"})},
        f"{API}/devices/regions": {"get": _op(
            "Devices by region", "read", ("200", "device counts per region",
                                          _ref("Regions")))},
        f"{API}/devices/register": {"post": _op(
            "Register devices", "admin", ("200", "replicated", _ref("RegistryResult")),
            body="DeviceIds", errors={"404": "devices are registered on shards",
                                      "409": "this replica is not the leader (see leader)"})},
        f"{API}/devices/revoke": {"post": _op(
            "Revoke devices", "admin", ("200", "replicated: their requests are refused",
                                        _ref("RegistryResult")),
            body="DeviceIds", errors={"404": "devices are registered on shards",
                                      "409": "this replica is not the leader (see leader)"})},
        f"{API}/dashboard": {"get": _op(
            "Dashboard data", "read", ("200", "everything the dashboard page plots",
                                       _ref("Dashboard")))},
        f"{API}/openapi.json": {"get": _op(
            "OpenAPI document", "read", ("200", "this document", {"type": "object"}))},
        "/metrics": {"get": _op("Prometheus metrics", "none",
                                ("200", "text exposition format", None), tag="public",
                                errors={"404": "metrics are off ([admin] metrics = false)"})},
        "/dashboard": {"get": _op(
            "Dashboard page", "none",
            ("200", "the page (no data in it: it asks for a token)",
             {"text/html": {"schema": {"type": "string"}}}), tag="public")},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Omega admin API",
            "version": __version__,
            "description": "Operations API of Omega's shard, aggregator and hub nodes. "
                           "Bearer tokens with roles read < operator < admin "
                           "(x-omega-role on each operation).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(dumps(openapi_document()), end="")
