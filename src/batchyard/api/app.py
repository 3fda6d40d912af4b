"""The ASGI app: routing, the request pipeline (request id → api-version → auth → handler → errors).

Handlers are thin: they parse the request, call one service function, and render its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from batchyard.api import agent_sync as agent_proto
from batchyard.api import http, rawlist, versions
from batchyard.api.health import Readiness
from batchyard.api.limits import REST_MAX_BODY, BodyLimit
from batchyard.api.logs import RequestLog
from batchyard.api.shared_key import SignedRequest, verify_shared_key
from batchyard.models import errors, wire
from batchyard.models.clock import format_http_date, parse_http_date, utcnow
from batchyard.models.decode import decode_body, normalise_enums, to_wire, validate_durations
from batchyard.service import account, autoscale, files, jobs, nodes, pools, tasks
from batchyard.service.common import Body
from batchyard.service.context import Conditions, Ctx, Written
from batchyard.service.listing import ListQuery

log = logging.getLogger("batchyard.api")

API_VERSIONS = versions.ACCEPTED  # every version since 2018-08-01.7.0, from the generated table
MAX_BODY = REST_MAX_BODY
#: The account lifetime statistics operations exist up to 2023-05-01.17.0 (dropped from the next spec).
LIFETIME_STATS_REMOVED_IN = "2023-11-01"


@dataclass
class Settings:
    account: str
    key: bytes
    public_url: str | None = None
    max_skew: timedelta = timedelta(minutes=15)


@dataclass
class Call:
    request: Request
    request_id: str
    base_url: str
    api_version: str

    def q(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def cond(self) -> Conditions:
        h = self.request.headers
        return Conditions(
            if_match=h.get("if-match"),
            if_none_match=h.get("if-none-match"),
            if_modified_since=_date_header(h.get("if-modified-since"), "If-Modified-Since"),
            if_unmodified_since=_date_header(h.get("if-unmodified-since"), "If-Unmodified-Since"),
        )

    def list_query(self) -> ListQuery:
        mr = self.q("maxresults")
        n = 1000
        if mr is not None:
            try:
                n = int(mr)
            except ValueError:
                raise errors.invalid_query_parameter("maxresults", mr) from None
            if n < 1 or n > 1000:
                raise errors.out_of_range_query_parameter("maxresults", mr)
        return ListQuery(
            filter=self.q("$filter") or None,
            select=_csv(self.q("$select")),
            expand=_csv(self.q("$expand")),
            max_results=n,
            skiptoken=self.q("$skiptoken"),
        )

    def flag(self, name: str) -> bool:
        v = self.q(name)
        if v is None:
            return False
        if v.lower() in ("true", "1"):
            return True
        if v.lower() in ("false", "0"):
            return False
        raise errors.invalid_query_parameter(name, v)

    async def body(self, model: type[Any] | None = None, limit: int = MAX_BODY) -> Body:
        data = await self.request.body()  # bounded while it is read (api.limits.BodyLimit)
        if len(data) > limit:
            raise errors.request_body_too_large(f"The request body exceeds {limit} bytes")
        if model is None:
            return {}
        data = versions.before_decode(model, self.api_version, data)
        try:
            obj = decode_body(data, model, required=model not in _OPTIONAL_BODIES)
        except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a JSON string
            raise errors.invalid_request_body(f"The body is not valid UTF-8 (byte {exc.start})") from None
        normalise_enums(obj)
        validate_durations(obj, rewrite=True)
        result: Body = to_wire(obj)
        versions.after_decode(model, self.api_version, result)
        return result


_OPTIONAL_BODIES: set[type[Any]] = {wire.BatchJobTerminateOptions}


def _csv(v: str | None) -> list[str] | None:
    if not v:
        return None
    return [p.strip() for p in v.split(",") if p.strip()]


def _date_header(v: str | None, name: str) -> Any:
    if v is None:
        return None
    try:
        return parse_http_date(v)
    except (TypeError, ValueError):
        raise errors.invalid_header_value(name, v) from None


Handler = Callable[[Call], Awaitable[Response]]


class Api:
    def __init__(self, ctx: Ctx, settings: Settings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.accounts = {settings.account: settings.key}

    def base_url(self, request: Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
        return f"{scheme}://{host}"

    def op(self, fn: Handler, stream: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """`fn` as an endpoint; ``stream``: the handler reads the (bounded) body itself, as it arrives."""

        async def endpoint(request: Request) -> Response:
            rid = str(uuid.uuid4())
            base = self.base_url(request)
            head = request.method == "HEAD"
            version = request.query_params.get("api-version")
            try:
                if not version:
                    raise errors.missing_query_parameter("api-version")
                if version not in API_VERSIONS:
                    raise errors.unsupported_request_version(version)
                self.authenticate(request)
                h = request.headers
                if not stream and ("transfer-encoding" in h or h.get("content-length", "0") != "0"):
                    # read (bounded) before answering, so a streamed answer never races the request's body
                    await request.body()
                resp = await fn(Call(request, rid, base, version))
            except errors.BatchError as e:
                resp = http.error_response(versions.error(version, e), base, rid, head)
            except ClientDisconnect:  # gone, or cut off by the body timeout (api.server): nobody to answer
                log.info("client disconnected during %s %s", request.method, request.url.path)
                resp = http.error_response(errors.request_timeout(0), base, rid, head)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                resp = http.error_response(errors.internal_error(), base, rid, head)
            return _service_headers(resp, request, rid)

        return endpoint

    def error(self, scope: Scope, err: errors.BatchError) -> Response:
        """A Batch error answered outside an operation (no route, body limits), with the usual headers."""
        request = Request(scope)
        rid = str(uuid.uuid4())
        resp = http.error_response(err, self.base_url(request), rid, request.method == "HEAD")
        return _service_headers(resp, request, rid)

    def authenticate(self, request: Request) -> None:
        scope = request.scope
        raw = scope.get("raw_path") or scope["path"].encode()
        sreq = SignedRequest(
            method=request.method,
            raw_path=raw.decode("latin-1").split("?", 1)[0],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        verify_shared_key(sreq, self.accounts, utcnow(), self.settings.max_skew)


def _service_headers(resp: Response, request: Request, rid: str) -> Response:
    """The headers every Batch answer carries: request-id, DataServiceVersion, the client's request id if asked."""
    resp.headers["request-id"] = rid
    resp.headers["DataServiceVersion"] = "3.0"
    crid = request.headers.get("client-request-id")
    if crid and request.headers.get("return-client-request-id", "").lower() == "true":
        resp.headers["client-request-id"] = crid
    return resp


# --- rendering helpers --------------------------------------------------------------------------------------


def _absolute(base: str, body: Body) -> Body:
    st = body.get("stats")
    if isinstance(st, dict) and str(st.get("url", "")).startswith("/"):
        body["stats"] = dict(st, url=base + st["url"])
    ni = body.get("nodeInfo")
    if isinstance(ni, dict):
        ni = dict(ni)
        for k in ("nodeUrl", "taskRootDirectoryUrl"):
            if isinstance(ni.get(k), str) and ni[k].startswith("/"):
                ni[k] = base + ni[k]
        body["nodeInfo"] = ni
    if isinstance(body.get("recentTasks"), list):
        body["recentTasks"] = [
            dict(t, taskUrl=base + t["taskUrl"]) if str(t.get("taskUrl", "")).startswith("/") else t
            for t in body["recentTasks"]
        ]
    return body


def _entity(call: Call, kind: str, path: str, body: Body, select: list[str] | None = None) -> Response:
    from batchyard.models.resources import select_props

    body = _absolute(call.base_url, dict(body, url=call.base_url + path))
    body = versions.response(kind, call.api_version, body)
    out: Body = {"odata.metadata": f"{call.base_url}/$metadata#{kind}/@Element"}
    out.update(select_props(body, select))
    return http.json_response(out, 200, http.entity_headers(body["eTag"], body["lastModified"]))


def _list(
    call: Call,
    kind: str,
    path_of: Callable[[Body], str] | None,
    page: tuple[list[Body], str | None],
    q: ListQuery,
) -> Response:
    from batchyard.models.resources import select_props

    items, token = page
    value = []
    for it in items:
        if path_of is not None:
            it = _absolute(call.base_url, dict(it, url=call.base_url + path_of(it)))
        elif "url" in it and str(it["url"]).startswith("/"):
            it = dict(it, url=call.base_url + it["url"])
        value.append(select_props(versions.response(kind, call.api_version, it), q.select))
    out: Body = {"odata.metadata": f"{call.base_url}/$metadata#{kind}", "value": value}
    if token:
        out["odata.nextLink"] = _next_link(call, q, token)
    return http.json_response(out)


def _next_link(call: Call, q: ListQuery, token: str) -> str:
    params = [f"api-version={call.api_version}", f"maxresults={q.max_results}"]
    for name, v in (("$filter", q.filter), ("$select", q.select), ("$expand", q.expand)):
        if v:
            params.append(f"{name}={quote(v if isinstance(v, str) else ','.join(v), safe='')}")
    params.append(f"$skiptoken={token}")
    return f"{call.base_url}{call.request.url.path}?{'&'.join(params)}"


def _written(call: Call, w: Written, status: int, location: bool = False) -> Response:
    return http.empty(status, http.write_headers(call.base_url, w.etag, w.last_modified, w.path, location))


def _p(call: Call, name: str) -> str:
    return str(call.request.path_params[name])


# --- file responses ------------------------------------------------------------------------------------------


def _file_response(call: Call, opened: files.OpenFile, url_path: str) -> Response:
    """Headers from the checked file; the body is read from its descriptor in worker threads."""
    try:
        resp = _file_response_for(call, opened, url_path)
    except BaseException:
        opened.close()
        raise
    if not isinstance(resp, StreamingResponse):
        opened.close()
    return resp


def _file_response_for(call: Call, opened: files.OpenFile, url_path: str) -> Response:
    info = opened.info
    cond = call.cond()
    mod = info.modified.replace(microsecond=0)
    if cond.if_modified_since is not None and not mod > cond.if_modified_since:
        return Response(b"", status_code=304)
    if cond.if_unmodified_since is not None and mod > cond.if_unmodified_since:
        raise errors.condition_not_met(write=False)
    headers = {
        "ocp-creation-time": format_http_date(info.created),
        "ocp-batch-file-isdirectory": "True" if info.is_dir else "False",
        "ocp-batch-file-url": http.file_url_header(call.base_url, url_path),
        "ocp-batch-file-mode": info.mode,
        "Last-Modified": format_http_date(info.modified),
        "Content-Type": info.content_type,
    }
    size = info.size
    start, end = 0, size - 1
    rng = call.request.headers.get("ocp-range")
    if rng:  # the service answers 200 (not 206) with the requested bytes
        start, end = _parse_range(rng, size)
    length = max(0, end - start + 1)
    headers["Content-Length"] = str(length)
    if call.request.method == "HEAD" or info.is_dir or length == 0:
        return Response(b"", status_code=200, headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            pos, left = start, length
            while left > 0:
                data = await opened.read(pos, min(files.CHUNK, left))
                if not data:
                    break
                pos += len(data)
                left -= len(data)
                yield data
        finally:
            opened.close()

    return StreamingResponse(chunks(), status_code=200, headers=headers, media_type=info.content_type)


def _parse_range(value: str, size: int) -> tuple[int, int]:
    v = value.strip()
    if not v.startswith("bytes="):
        raise errors.invalid_range(value)
    spec = v[6:]
    a, _, b = spec.partition("-")
    try:
        if a == "":
            n = int(b)
            return max(0, size - n), size - 1
        start = int(a)
        end = int(b) if b else size - 1
    except ValueError:
        raise errors.invalid_range(value) from None
    if start >= size or start > end:
        if size == 0 and start == 0:
            return 0, -1
        raise errors.invalid_range(value)
    return start, min(end, size - 1)


# --- the app --------------------------------------------------------------------------------------------------


def create_app(
    ctx: Ctx, settings: Settings, background: list[Callable[[], Awaitable[None]]] | None = None
) -> ASGIApp:
    """The whole HTTP application: request log -> body limits -> routes."""
    api = Api(ctx, settings)
    o = api.op

    # pools
    async def create_pool(c: Call) -> Response:
        w = pools.create_pool(ctx, await c.body(wire.BatchPoolCreateOptions))
        return _written(c, w, 201, location=True)

    async def list_pools(c: Call) -> Response:
        q = c.list_query()
        return _list(c, "pools", lambda b: f"/pools/{b['id']}", pools.list_pools(ctx, q), q)

    async def get_pool(c: Call) -> Response:
        pid = _p(c, "pool_id")
        body = pools.get_pool(ctx, pid, c.cond(), c.list_query().expand)
        if c.request.method == "HEAD":
            return http.empty(200, http.entity_headers(body["eTag"], body["lastModified"]))
        return _entity(c, "pools", f"/pools/{body['id']}", body, c.list_query().select)

    async def delete_pool(c: Call) -> Response:
        pools.delete_pool(ctx, _p(c, "pool_id"), c.cond())
        return http.empty(202)

    async def patch_pool(c: Call) -> Response:
        w = pools.patch_pool(ctx, _p(c, "pool_id"), await c.body(wire.BatchPoolUpdateOptions), c.cond())
        return _written(c, w, 200)

    async def update_properties(c: Call) -> Response:
        w = pools.replace_pool_properties(ctx, _p(c, "pool_id"), await c.body(wire.BatchPoolReplaceOptions))
        return _written(c, w, 204)

    async def resize(c: Call) -> Response:
        w = pools.resize_pool(ctx, _p(c, "pool_id"), await c.body(wire.BatchPoolResizeOptions), c.cond())
        return _written(c, w, 202)

    async def stop_resize(c: Call) -> Response:
        await c.body()
        return _written(c, pools.stop_resize(ctx, _p(c, "pool_id"), c.cond()), 202)

    # autoscale (service.autoscale)
    async def enable_autoscale(c: Call) -> Response:
        spec = await c.body(wire.BatchPoolEnableAutoScaleOptions)
        return _written(c, autoscale.enable(ctx, _p(c, "pool_id"), spec, c.cond()), 200)

    async def disable_autoscale(c: Call) -> Response:
        await c.body()
        return _written(c, autoscale.disable(ctx, _p(c, "pool_id"), c.cond()), 200)

    async def evaluate_autoscale(c: Call) -> Response:
        run = autoscale.evaluate(ctx, _p(c, "pool_id"), await c.body(wire.BatchPoolEvaluateAutoScaleOptions))
        meta = f"{c.base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun"
        return http.json_response(
            {"odata.metadata": meta, **run}, headers={"DataServiceId": c.base_url + c.request.url.path}
        )

    async def autoscale_history(c: Call) -> Response:  # batchyard-only
        return http.json_response(autoscale.history(ctx, _p(c, "pool_id")))

    # jobs
    async def create_job(c: Call) -> Response:
        return _written(c, jobs.create_job(ctx, await c.body(wire.BatchJobCreateOptions)), 201, location=True)

    async def list_jobs(c: Call) -> Response:
        q = c.list_query()
        return _list(c, "jobs", lambda b: f"/jobs/{b['id']}", jobs.list_jobs(ctx, q), q)

    async def get_job(c: Call) -> Response:
        body = jobs.get_job(ctx, _p(c, "job_id"), c.cond(), c.list_query().expand)
        return _entity(c, "jobs", f"/jobs/{body['id']}", body, c.list_query().select)

    async def patch_job(c: Call) -> Response:
        spec = await c.body(wire.BatchJobUpdateOptions)
        return _written(c, jobs.update_job(ctx, _p(c, "job_id"), spec, c.cond(), replace=False), 200)

    async def put_job(c: Call) -> Response:
        spec = await c.body(wire.BatchJob)
        return _written(c, jobs.update_job(ctx, _p(c, "job_id"), spec, c.cond(), replace=True), 200)

    async def delete_job(c: Call) -> Response:
        jobs.delete_job(ctx, _p(c, "job_id"), c.cond())
        return http.empty(202)

    async def terminate_job(c: Call) -> Response:
        spec = await c.body(wire.BatchJobTerminateOptions)
        w = jobs.terminate_job(ctx, _p(c, "job_id"), spec.get("terminateReason"), c.cond())
        return _written(c, w, 202)

    async def disable_job(c: Call) -> Response:
        spec = await c.body(wire.BatchJobDisableOptions)
        return _written(
            c, jobs.disable_job(ctx, _p(c, "job_id"), str(spec.get("disableTasks", "")), c.cond()), 202
        )

    async def enable_job(c: Call) -> Response:
        await c.body()
        return _written(c, jobs.enable_job(ctx, _p(c, "job_id"), c.cond()), 202)

    async def task_counts(c: Call) -> Response:
        counts = jobs.task_counts(ctx, _p(c, "job_id"))
        counts = versions.response("taskcounts", c.api_version, counts)
        return http.json_response(
            {"odata.metadata": f"{c.base_url}/$metadata#taskcountsresult/@Element", **counts}
        )

    # tasks
    async def create_task(c: Call) -> Response:
        w = tasks.create_task(ctx, _p(c, "job_id"), await c.body(wire.BatchTaskCreateOptions))
        return _written(c, w, 201, location=True)

    async def add_collection(c: Call) -> Response:
        group = await c.body(wire.BatchTaskGroup)
        results = tasks.add_collection(ctx, _p(c, "job_id"), list(group.get("value") or []), c.base_url)
        return http.json_response(
            {
                "odata.metadata": f"{c.base_url}/$metadata#taskaddresult",
                "value": [versions.response("taskaddresult", c.api_version, r) for r in results],
            }
        )

    async def list_tasks(c: Call) -> Response:
        q = c.list_query()
        job_id = _p(c, "job_id")
        skip = None if q.select or q.expand else rawlist.needles("task", c.api_version)
        page = tasks.list_task_texts(ctx, job_id, q) if skip is not None else None
        if skip is not None and page is not None:  # stored JSON as it is (api.rawlist)
            base = f"{c.base_url}/jobs/{job_id}/tasks/"

            def slow(it: Body) -> Body:
                return versions.response(
                    "tasks", c.api_version, _absolute(c.base_url, dict(it, url=base + it["id"]))
                )

            rows, token = page
            data = rawlist.page_bytes(
                f"{c.base_url}/$metadata#tasks",
                rows,
                lambda task_id: base + task_id,
                slow,
                skip,
                _next_link(c, q, token) if token else None,
            )
            return Response(data, media_type=http.JSON_TYPE)
        return _list(
            c, "tasks", lambda b: f"/jobs/{job_id}/tasks/{b['id']}", tasks.list_tasks(ctx, job_id, q), q
        )

    async def get_task(c: Call) -> Response:
        job_id = _p(c, "job_id")
        body = tasks.get_task(ctx, job_id, _p(c, "task_id"), c.cond(), c.list_query().expand)
        return _entity(c, "tasks", f"/jobs/{job_id}/tasks/{body['id']}", body, c.list_query().select)

    async def put_task(c: Call) -> Response:
        spec = await c.body(wire.BatchTask)
        return _written(c, tasks.replace_task(ctx, _p(c, "job_id"), _p(c, "task_id"), spec, c.cond()), 200)

    async def delete_task(c: Call) -> Response:
        files.remove_task_files(ctx, *tasks.delete_task(ctx, _p(c, "job_id"), _p(c, "task_id"), c.cond()))
        return http.empty(200)

    async def terminate_task(c: Call) -> Response:
        await c.body()
        return _written(c, tasks.terminate_task(ctx, _p(c, "job_id"), _p(c, "task_id"), c.cond()), 204)

    async def reactivate_task(c: Call) -> Response:
        await c.body()
        return _written(c, tasks.reactivate_task(ctx, _p(c, "job_id"), _p(c, "task_id"), c.cond()), 204)

    # files
    def _fpath(c: Call) -> str:
        return unquote(str(c.request.path_params["file_path"]))

    async def list_task_files(c: Call) -> Response:
        q = c.list_query()
        page = await files.list_task_files(ctx, _p(c, "job_id"), _p(c, "task_id"), c.flag("recursive"), q)
        return _list(c, "files", None, page, q)

    async def task_file(c: Call) -> Response:
        job_id, task_id, path = _p(c, "job_id"), _p(c, "task_id"), _fpath(c)
        opened = await files.task_file(ctx, job_id, task_id, path)
        return _file_response(c, opened, f"/jobs/{job_id}/tasks/{task_id}/files/{path}")

    async def delete_task_file(c: Call) -> Response:
        await files.delete_task_file(ctx, _p(c, "job_id"), _p(c, "task_id"), _fpath(c), c.flag("recursive"))
        return http.empty(200)

    async def list_node_files(c: Call) -> Response:
        q = c.list_query()
        page = await files.list_node_files(ctx, _p(c, "pool_id"), _p(c, "node_id"), c.flag("recursive"), q)
        return _list(c, "files", None, page, q)

    async def node_file(c: Call) -> Response:
        pool_id, node_id, path = _p(c, "pool_id"), _p(c, "node_id"), _fpath(c)
        opened = await files.node_file(ctx, pool_id, node_id, path)
        return _file_response(c, opened, f"/pools/{pool_id}/nodes/{node_id}/files/{path}")

    async def delete_node_file(c: Call) -> Response:
        await files.delete_node_file(ctx, _p(c, "pool_id"), _p(c, "node_id"), _fpath(c), c.flag("recursive"))
        return http.empty(200)

    # nodes and account
    async def list_nodes(c: Call) -> Response:
        q = c.list_query()
        pool_id = _p(c, "pool_id")
        return _list(
            c, "nodes", lambda b: f"/pools/{pool_id}/nodes/{b['id']}", nodes.list_nodes(ctx, pool_id, q), q
        )

    async def get_node(c: Call) -> Response:
        pool_id = _p(c, "pool_id")
        body = nodes.get_node(ctx, pool_id, _p(c, "node_id"))
        body = _absolute(c.base_url, dict(body, url=f"{c.base_url}/pools/{pool_id}/nodes/{body['id']}"))
        body = versions.response("nodes", c.api_version, body)
        out = {"odata.metadata": f"{c.base_url}/$metadata#nodes/@Element"}
        from batchyard.models.resources import select_props

        out.update(select_props(body, c.list_query().select))
        return http.json_response(out)

    async def node_counts(c: Call) -> Response:
        q = c.list_query()
        return _list(c, "poolnodecounts", None, nodes.node_counts(ctx, q), q)

    async def lifetime_job_stats(c: Call) -> Response:
        if c.api_version >= LIFETIME_STATS_REMOVED_IN:
            raise errors.invalid_uri()
        body = account.lifetime_job_stats(ctx, f"{c.base_url}/lifetimejobstats")
        return http.json_response({"odata.metadata": f"{c.base_url}/$metadata#jobstats/@Element", **body})

    async def supported_images(c: Call) -> Response:
        q = c.list_query()
        return _list(c, "supportedimages", None, nodes.supported_images(q), q)

    def not_implemented(name: str) -> Handler:
        async def h(c: Call) -> Response:
            raise errors.not_implemented(name)

        return h

    # the agent protocol (node token auth, not Shared Key)
    tokens = agent_proto.TokenCheck(ctx)

    async def agent_sync(request: Request) -> Response:
        try:
            return http.json_response(await agent_proto.sync(ctx, tokens, request.headers, request.body))
        except errors.BatchError as e:
            if e.status == 400:
                log.warning("agent sync refused: %s %s", e.message, dict(e.values))
            return api.error(request.scope, e)
        except ClientDisconnect:
            return api.error(request.scope, errors.request_timeout(0))

    # health probes (no Shared Key, no api-version)
    readiness = Readiness(ctx.store)

    async def healthz(request: Request) -> Response:
        return http.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        ready, details = await readiness.check()
        return http.json_response(details, 200 if ready else 503, headers={"Cache-Control": "no-store"})

    P = "/pools/{pool_id}"
    J = "/jobs/{job_id}"
    T = J + "/tasks/{task_id}"
    N = P + "/nodes/{node_id}"
    routes = [
        # first: the router tries routes in order, and agent syncs are most of the requests
        Route("/batchyard/agent/v1/sync", agent_sync, methods=["POST"]),
        Route("/pools", o(create_pool), methods=["POST"]),
        Route("/pools", o(list_pools), methods=["GET"]),
        Route(P, o(get_pool), methods=["GET", "HEAD"]),
        Route(P, o(delete_pool), methods=["DELETE"]),
        Route(P, o(patch_pool), methods=["PATCH"]),
        Route(P + "/updateproperties", o(update_properties), methods=["POST"]),
        Route(P + "/resize", o(resize), methods=["POST"]),
        Route(P + "/stopresize", o(stop_resize), methods=["POST"]),
        Route(P + "/enableautoscale", o(enable_autoscale), methods=["POST"]),
        Route(P + "/disableautoscale", o(disable_autoscale), methods=["POST"]),
        Route(P + "/evaluateautoscale", o(evaluate_autoscale), methods=["POST"]),
        Route("/batchyard" + P + "/autoscalehistory", o(autoscale_history), methods=["GET"]),
        Route(P + "/nodes", o(list_nodes), methods=["GET"]),
        Route(N, o(get_node), methods=["GET"]),
        Route(N + "/files", o(list_node_files), methods=["GET"]),
        Route(N + "/files/{file_path:path}", o(node_file), methods=["GET", "HEAD"]),
        Route(N + "/files/{file_path:path}", o(delete_node_file), methods=["DELETE"]),
        Route("/jobs", o(create_job), methods=["POST"]),
        Route("/jobs", o(list_jobs), methods=["GET"]),
        Route(J, o(get_job), methods=["GET"]),
        Route(J, o(patch_job), methods=["PATCH"]),
        Route(J, o(put_job), methods=["PUT"]),
        Route(J, o(delete_job), methods=["DELETE"]),
        Route(J + "/terminate", o(terminate_job), methods=["POST"]),
        Route(J + "/disable", o(disable_job), methods=["POST"]),
        Route(J + "/enable", o(enable_job), methods=["POST"]),
        Route(J + "/taskcounts", o(task_counts), methods=["GET"]),
        Route(J + "/tasks", o(create_task), methods=["POST"]),
        Route(J + "/tasks", o(list_tasks), methods=["GET"]),
        Route(J + "/addtaskcollection", o(add_collection), methods=["POST"]),
        Route(T, o(get_task), methods=["GET"]),
        Route(T, o(put_task), methods=["PUT"]),
        Route(T, o(delete_task), methods=["DELETE"]),
        Route(T + "/terminate", o(terminate_task), methods=["POST"]),
        Route(T + "/reactivate", o(reactivate_task), methods=["POST"]),
        Route(T + "/files", o(list_task_files), methods=["GET"]),
        Route(T + "/files/{file_path:path}", o(task_file), methods=["GET", "HEAD"]),
        Route(T + "/files/{file_path:path}", o(delete_task_file), methods=["DELETE"]),
        Route("/supportedimages", o(supported_images), methods=["GET"]),
        Route("/nodecounts", o(node_counts), methods=["GET"]),
        Route("/lifetimejobstats", o(lifetime_job_stats), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    # operations this server does not implement yet: a clear Batch error, never a 404 or a fake success
    pending = [
        (N + "/{action}", ["POST", "GET"], "node operations"),
    ]
    from batchyard.api import subtasks  # its handlers use this module's rendering helpers

    routes += subtasks.routes(o, ctx)
    from batchyard.api import jobtasks as jobtask_routes

    routes += jobtask_routes.routes(o, ctx)
    from batchyard.api import nodes as node_api  # node operations and the preemption extension

    routes += node_api.routes(o, ctx)
    from batchyard.api import certificates as certificate_routes

    routes += certificate_routes.routes(o, ctx)
    from batchyard.api import node_access as node_access_routes

    routes += node_access_routes.routes(o, ctx)
    from batchyard.api import applications  # its handlers use this module's rendering helpers

    routes += applications.routes(o, ctx)
    from batchyard.api import poolstats

    routes += poolstats.routes(o, ctx)
    for path, methods, name in pending:
        routes.append(Route(path, o(not_implemented(name)), methods=methods))
    from batchyard.api import jobschedules  # its handlers use this module's rendering helpers

    routes += jobschedules.routes(o, ctx)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        running = [asyncio.ensure_future(fn()) for fn in background or []]
        try:
            yield
        finally:
            for t in running:
                t.cancel()

    async def no_route(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        err = errors.unsupported_http_verb(request.method) if status == 405 else errors.invalid_uri()
        return api.error(request.scope, err)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: no_route, 405: no_route})
    app.router.redirect_slashes = False  # `/pools/` is InvalidUri, as on the service, never a 307
    return RequestLog(BodyLimit(app, api.error))
