"""The admin API as a Starlette app: routes, roles, errors, rate limits.

``build_app(admin)`` returns the ASGI app; ``Admin`` holds what the routes read
(the node's views, tokens, metrics, watched shards). Every route declares the
role it needs (the same as ``x-omega-role`` in the OpenAPI document; a test
checks they agree). The order of checks on every request: token (401), role
(403), write rate limit (429), body (422), then the work — so a caller without
the right token learns nothing, not even whether its body was well formed.
Errors are JSON ``{"error", "detail", ...}``; tokens are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from omega.errors import OmegaError
from omega.ops.http.auth import AuthError, Role, Tokens
from omega.ops.http.bodies import BadBody, is_id, parse_body
from omega.ops.http.federation import json_safe
from omega.ops.http.openapi import API, openapi_document
from omega.ops.http.views import NodeView
from omega.ops.http.watch import ShardWatcher
from omega.ops.metrics import NodeMetrics
from omega.shard.ratelimit import KeyedLimiter

log = logging.getLogger("omega.ops.http")

Endpoint = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra
        super().__init__(detail)


def error_response(status: int, error: str, detail: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status,
                        headers=headers)


@dataclass
class Admin:
    """What the routes need. ``metrics`` None: metrics off; ``watcher`` None: no shards
    watched."""

    view: NodeView
    tokens: Tokens
    metrics: NodeMetrics | None = None
    watcher: ShardWatcher | None = None

    def __post_init__(self) -> None:
        s = self.view.settings
        self.writes = KeyedLimiter(60.0 / s.write_per_min, s.write_burst, max_keys=10_000)


# -- what the routes compute (plain functions of Admin) -------------------------------------


def all_shards(admin: Admin) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    local = admin.view.shard_entry()
    if local is not None:
        out.append({**local, "source": None, "last_seen": admin.view.now(),
                    "error": None})
    if admin.watcher is not None:
        out.extend(s for s in admin.watcher.shards() if local is None or s["id"] != local["id"])
    return out


def stats_of(admin: Admin, shard_id: str) -> dict[str, Any] | None:
    if shard_id == admin.view.shard_id:
        local = admin.view.shard_stats()
        if local is not None:
            return local
    return admin.watcher.stats(shard_id) if admin.watcher is not None else None


def by_group(shards: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The freshest reachable replica of each Raft group (replicas share device state)."""
    groups: dict[str, dict[str, Any]] = {}
    for s in shards:
        if s["status"] == "unreachable":
            continue
        key = str(s.get("group") or s["id"])
        best = groups.get(key)
        if best is None or (s.get("devices") or 0) > (best.get("devices") or 0):
            groups[key] = s
    return groups


def regions(admin: Admin) -> dict[str, Any]:
    shards = all_shards(admin)
    table: dict[str, dict[str, Any]] = {}
    for s in shards:
        region = str(s.get("region") or "unknown")
        row = table.setdefault(region, {"region": region, "shards": 0, "devices_total": 0,
                                        "devices_active": 0})
        row["shards"] += 1
    for s in by_group(shards).values():
        row = table[str(s.get("region") or "unknown")]
        row["devices_total"] += int(s.get("devices") or 0)
        row["devices_active"] += int(s.get("devices_active") or 0)
    return {"regions": sorted(table.values(), key=lambda r: r["region"])}


def dashboard(admin: Admin) -> dict[str, Any]:
    shards = all_shards(admin)
    groups = by_group(shards)
    stats = [st for st in (stats_of(admin, str(s["id"])) for s in shards
                           if s["status"] != "unreachable") if st is not None]
    rates = [st["sync_requests_per_min"] for st in stats if st["sync_requests_per_min"] is not None]
    pushes = [st["push_latency_ms_avg"] for st in stats
              if st.get("push_latency_ms_avg") is not None]
    weighted = [(st["sync_latency_ms_avg"], st["sync_requests_per_min"] or 0.0) for st in stats
                if st["sync_latency_ms_avg"] is not None]
    weight = sum(w for _, w in weighted)
    rejected: dict[str, int] = {}
    for st in stats:
        for reason, n in st["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + int(n)
    received: dict[str, int] = {}
    for st in stats:
        key = str(st.get("group") or st["id"])
        received[key] = max(received.get(key, 0), int(st["reports_received"]))
    return {
        "node": admin.view.health(),
        "shards": shards,
        "totals": {
            "devices": sum(int(s.get("devices") or 0) for s in groups.values()),
            "devices_active": sum(int(s.get("devices_active") or 0) for s in groups.values()),
            "sync_requests_per_min": round(sum(rates), 3) if rates else None,
            "sync_latency_ms_avg": (round(sum(v * w for v, w in weighted) / weight, 3)
                                    if weight > 0 else
                                    (weighted[0][0] if weighted else None)),
            # Pushes go to a group's leader: the slowest leader is the one to look at.
            "push_latency_ms_avg": max(pushes) if pushes else None,
            "reports_received": sum(received.values()),
        },
        "rejected": rejected,
        "federation": admin.view.federation_status(),
        "as_of": admin.view.now(),
    }


def registry_change(admin: Admin, device_ids: list[str], revoke: bool) -> dict[str, Any]:
    from omega.raft import NotLeader

    service = admin.view.shard_service()
    if service is None:
        raise ApiError(404, "not_found", f"devices are registered on shard nodes; this is a "
                                         f"{admin.view.role}")
    try:
        service.register_devices(device_ids, revoke=revoke)
    except NotLeader as exc:
        leader = getattr(exc, "leader", None)
        raise ApiError(409, "not_leader", "this replica is not the Raft leader: send the "
                       "request to the leader's admin API", leader=leader) from None
    except OmegaError as exc:
        raise ApiError(409, "not_committed", f"not replicated ({type(exc).__name__}); "
                       "retry unchanged (registering twice changes nothing)") from None
    return {"action": "revoke" if revoke else "register", "devices": len(device_ids)}


def refused(exc: OmegaError) -> ApiError:
    """409 for a refusal by federation, with its typed code (``not_leader`` names the
    leader when it knows it: ask that node's admin API instead)."""
    code = str(getattr(exc, "code", "") or "refused")
    leader = getattr(exc, "leader", None)
    return ApiError(409, code, str(exc), **({"leader": str(leader)} if leader else {}))


def _federation(admin: Admin, method: str) -> Any:
    """Federation's ``method``, or 409 when federation (or that part of it) is not here."""
    fed = admin.view.federation()
    if fed is None:
        raise ApiError(409, "federation_unavailable",
                       f"federation not running on this node (role {admin.view.role})")
    fn = getattr(fed, method, None)
    if not callable(fn):
        raise ApiError(409, "federation_unavailable",
                       f"federation on this node (role {admin.view.role}) has no {method}")
    return fn


# -- routes -------------------------------------------------------------------------------


def build_app(admin: Admin) -> Starlette:
    view = admin.view
    page = resources.files("omega.ops.http").joinpath("static/dashboard.html").read_bytes()
    document = openapi_document()

    def guarded(role: Role | None, work: Endpoint, *, write: bool = False) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            caller = "none"
            if role is not None:
                try:
                    caller = admin.tokens.check(request.headers.get("authorization"), role).label
                except AuthError as exc:
                    log.info("admin request refused", extra={"fields": {
                        "path": request.url.path, "status": exc.status,
                        "client": request.client.host if request.client else None}})
                    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                    return error_response(exc.status, "unauthorized" if exc.status == 401
                                          else "forbidden", str(exc), headers)
            if write:
                host = request.client.host if request.client else "?"
                wait = admin.writes.acquire(f"{caller}@{host}".encode())
                if wait is not None:
                    return error_response(429, "rate_limited", "too many write requests",
                                          {"Retry-After": str(max(1, round(wait + 0.5)))},
                                          retry_after_s=round(wait, 3))
            try:
                response = await work(request)
            except BadBody as exc:
                return error_response(422, "invalid_body", exc.message, field=exc.field)
            except ApiError as exc:
                return error_response(exc.status, exc.error, exc.detail, **exc.extra)
            if write:
                log.info("admin write", extra={"fields": {
                    "path": request.url.path, "role": caller, "status": response.status_code}})
            return response

        return endpoint

    async def health(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(view.health))

    async def shards(_: Request) -> Response:
        listed = await run_in_threadpool(all_shards, admin)
        watched = len(admin.watcher.urls) if admin.watcher is not None else 0
        return JSONResponse({"shards": listed, "watched": watched})

    async def shard_stats(request: Request) -> Response:
        shard_id = request.path_params["shard_id"]
        st = await run_in_threadpool(stats_of, admin, shard_id)
        if st is None:
            raise ApiError(404, "not_found", f"no shard {shard_id!r} here nor among the "
                                             "watched ones (see GET /api/v1/shards)")
        return JSONResponse(st)

    async def content(request: Request) -> Response:
        item = parse_body(await request.body(), "ContentItem")
        if not is_id(item["id"]):
            raise BadBody("id", "must be letters, digits and . _ : - only")
        add_content = _federation(admin, "add_content")
        if "text" in item:  # the hub embeds the title with metadata.description
            meta = dict(item["metadata"])
            meta.setdefault("description", item["text"])
            item = {k: v for k, v in item.items() if k != "text"} | {"metadata": meta}
        try:
            result = await run_in_threadpool(add_content, [item])
        except OmegaError as exc:
            raise refused(exc) from None
        return JSONResponse({"id": item["id"], "result": json_safe(dict(result))},
                            status_code=201)

    async def federation(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(view.federation_status))

    async def trigger(request: Request) -> Response:
        raw = await request.body()  # optional: {"version": N} asks the hub for release N
        version = parse_body(raw, "TriggerRequest").get("version") if raw.strip() else None
        trigger_round = _federation(admin, "trigger")
        if version is not None and view.role != "hub":
            raise ApiError(409, "not_hub", f"a release version is for the hub; this node "
                                           f"is a {view.role}: send it without a body")
        try:
            result = await run_in_threadpool(
                trigger_round, *(() if version is None else (version,)))
        except OmegaError as exc:
            raise refused(exc) from None
        return JSONResponse({"accepted": True, "result": json_safe(dict(result))},
                            status_code=202)

    async def tree(_: Request) -> Response:
        t = await run_in_threadpool(view.tree)
        if t is None:
            raise ApiError(409, "starting", "the node is still starting; retry")
        return JSONResponse(t)

    async def raft(_: Request) -> Response:
        st = await run_in_threadpool(view.raft)
        if st is None:
            raise ApiError(404, "not_found", f"no Raft replica on this node (role {view.role})")
        return JSONResponse(st)

    async def device_regions(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(regions, admin))

    def registry(revoke: bool) -> Endpoint:
        async def change(request: Request) -> Response:
            body = parse_body(await request.body(), "DeviceIds")
            ids = body["device_ids"]
            bad = next((i for i, d in enumerate(ids) if not is_id(d)), None)
            if bad is not None:
                raise BadBody(f"device_ids.{bad}", "must be letters, digits and . _ : - only")
            return JSONResponse(await run_in_threadpool(registry_change, admin, ids, revoke))

        return change

    async def dashboard_data(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(dashboard, admin))

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    async def metrics(_: Request) -> Response:
        if admin.metrics is None or not admin.metrics.enabled:
            raise ApiError(404, "not_found", "metrics are off on this node ([admin] metrics)")
        body = await run_in_threadpool(admin.metrics.exposition)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def dashboard_page(_: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'"})

    async def root(_: Request) -> Response:
        return RedirectResponse("/dashboard")

    R, OP, A = Role.READ, Role.OPERATOR, Role.ADMIN
    table: list[tuple[str, str, Role | None, Endpoint, bool]] = [
        (f"{API}/health", "GET", None, health, False),
        (f"{API}/shards", "GET", R, shards, False),
        (f"{API}/shards/{{shard_id}}/stats", "GET", R, shard_stats, False),
        (f"{API}/content", "POST", OP, content, True),
        (f"{API}/federation", "GET", R, federation, False),
        (f"{API}/federation/trigger", "POST", OP, trigger, True),
        (f"{API}/node/tree", "GET", R, tree, False),
        (f"{API}/node/raft", "GET", R, raft, False),
        (f"{API}/devices/regions", "GET", R, device_regions, False),
        (f"{API}/devices/register", "POST", A, registry(False), True),
        (f"{API}/devices/revoke", "POST", A, registry(True), True),
        (f"{API}/dashboard", "GET", R, dashboard_data, False),
        (f"{API}/openapi.json", "GET", R, openapi, False),
        ("/metrics", "GET", None, metrics, False),
        ("/dashboard", "GET", None, dashboard_page, False),
    ]
    routes = [Route(path, guarded(role, fn, write=write), methods=[method])
              for path, method, role, fn, write in table]
    routes.append(Route("/", root, methods=["GET"], include_in_schema=False))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail),
                              dict(exc.headers) if exc.headers else None)

    async def internal(_: Request, exc: Exception) -> Response:
        log.error("admin request failed", exc_info=exc)
        return error_response(500, "internal", "internal error (logged on the node)")

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error,
                                                       Exception: internal})
    app.state.roles = {(path, method): (role.label if role else "none")
                       for path, method, role, _, _ in table}
    return app
