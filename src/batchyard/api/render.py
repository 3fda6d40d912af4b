"""What every handler shares: the parsed call (`Call`) and how results become Batch answers.

An entity, a list page with its ``odata.nextLink``, the headers of a write, a file; urls made absolute.
The handlers of each resource family (api.pools, api.jobs, api.tasks, api.files, api.nodes, ...) use these
and nothing else of the HTTP layer, so each answers exactly as the others do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from batchyard.api import http, versions
from batchyard.api.limits import REST_MAX_BODY
from batchyard.models import errors, wire
from batchyard.models.clock import format_http_date, parse_http_date
from batchyard.models.decode import decode_body, normalise_enums, to_wire, validate_durations
from batchyard.service import files
from batchyard.service.common import Body
from batchyard.service.context import Conditions, Written
from batchyard.service.listing import ListQuery

MAX_BODY = REST_MAX_BODY


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


class Op(Protocol):
    """How create_app wraps a handler into an endpoint (`app.Api.op`); ``stream``: it reads its own body."""

    def __call__(self, fn: Handler, stream: bool = False) -> Callable[[Request], Awaitable[Response]]: ...


def route_table(o: Op, table: list[tuple[str, Handler, list[str]]]) -> list[Route]:
    """A resource family's routes: (path, handler, methods) rows, each handler wrapped by `o`."""
    return [Route(path, o(fn), methods=methods) for path, fn, methods in table]


def service_headers(resp: Response, request: Request, rid: str) -> Response:
    """The headers every Batch answer carries: request-id, DataServiceVersion, the client's request id if asked."""
    resp.headers["request-id"] = rid
    resp.headers["DataServiceVersion"] = "3.0"
    crid = request.headers.get("client-request-id")
    if crid and request.headers.get("return-client-request-id", "").lower() == "true":
        resp.headers["client-request-id"] = crid
    return resp


# --- rendering helpers --------------------------------------------------------------------------------------


def absolute(base: str, body: Body) -> Body:
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


def entity(call: Call, kind: str, path: str, body: Body, select: list[str] | None = None) -> Response:
    from batchyard.models.resources import select_props

    body = absolute(call.base_url, dict(body, url=call.base_url + path))
    body = versions.response(kind, call.api_version, body)
    out: Body = {"odata.metadata": f"{call.base_url}/$metadata#{kind}/@Element"}
    out.update(select_props(body, select))
    return http.json_response(out, 200, http.entity_headers(body["eTag"], body["lastModified"]))


def collection(
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
            it = absolute(call.base_url, dict(it, url=call.base_url + path_of(it)))
        elif "url" in it and str(it["url"]).startswith("/"):
            it = dict(it, url=call.base_url + it["url"])
        value.append(select_props(versions.response(kind, call.api_version, it), q.select))
    out: Body = {"odata.metadata": f"{call.base_url}/$metadata#{kind}", "value": value}
    if token:
        out["odata.nextLink"] = next_link(call, q, token)
    return http.json_response(out)


def next_link(call: Call, q: ListQuery, token: str) -> str:
    params = [f"api-version={call.api_version}", f"maxresults={q.max_results}"]
    for name, v in (("$filter", q.filter), ("$select", q.select), ("$expand", q.expand)):
        if v:
            params.append(f"{name}={quote(v if isinstance(v, str) else ','.join(v), safe='')}")
    params.append(f"$skiptoken={token}")
    return f"{call.base_url}{call.request.url.path}?{'&'.join(params)}"


def written(call: Call, w: Written, status: int, location: bool = False) -> Response:
    return http.empty(status, http.write_headers(call.base_url, w.etag, w.last_modified, w.path, location))


def param(call: Call, name: str) -> str:
    return str(call.request.path_params[name])


# --- file responses ------------------------------------------------------------------------------------------


def file_response(call: Call, opened: files.OpenFile, url_path: str) -> Response:
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
