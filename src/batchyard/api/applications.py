"""Application packages: the data plane's read operations, batchyard's management surface and the agents' fetch.

* ``GET /applications``, ``GET /applications/{id}``: as the service answers them (Shared Key, every api-version).
* ``/batchyard/applications/...`` (Shared Key): create/update/delete applications, upload (``PUT`` a zip) and
  delete package versions, set the default version (decision 0150). Uploads stream to disk, bounded by
  `limits.PACKAGE_MAX_BODY`, and are checked as zips before they are kept.
* ``/batchyard/agent/v1/packages...`` (node token, like the sync route): a node resolves its pool's or a task's
  references and downloads the zips over HTTP; it never reads the server's data directory.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.agent_sync import NODE_ID_HEADER, TOKEN_HEADER, TokenCheck
from batchyard.api.render import Call, Op, collection, param, service_headers
from batchyard.models import errors
from batchyard.service import applications as apps
from batchyard.service.common import Body
from batchyard.service.context import Ctx

#: Uploads stored at once (each up to `limits.PACKAGE_MAX_BODY` on disk); more wait their turn.
MAX_CONCURRENT_UPLOADS = 4


class _Settings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    displayName: str | None = None
    allowUpdates: bool | None = None
    defaultVersion: str | None = None


_settings = msgspec.json.Decoder(_Settings)


def decode_settings(data: bytes) -> Body:
    """A management body: only displayName / allowUpdates / defaultVersion; 400 naming anything else.

    Typed decoding stops at the first value that does not fit, so deep nesting never recurses far."""
    if not data.strip():
        return {}
    try:
        spec = _settings.decode(data)
    except UnicodeDecodeError as exc:
        raise errors.invalid_request_body(f"The body is not valid UTF-8 (byte {exc.start})") from None
    except msgspec.ValidationError as e:
        reason, _, where = str(e).replace("`", "").partition(" - at ")
        where = where.removeprefix("$.").removeprefix("$")
        if reason.startswith("Object contains unknown field "):
            raise errors.unsupported_property(reason.removeprefix("Object contains unknown field ")) from None
        if where:
            raise errors.invalid_property_value(where, "", reason) from None
        raise errors.invalid_request_body(reason) from None
    except (msgspec.DecodeError, RecursionError) as e:
        raise errors.invalid_request_body(str(e).replace("`", "")) from None
    raw = msgspec.json.decode(data)  # which properties were sent (a null clears a setting)
    return {k: getattr(spec, k) for k in _Settings.__struct_fields__ if k in raw}


def routes(o: Op, ctx: Ctx) -> list[Route]:
    # --- data plane
    async def list_applications(c: Call) -> Response:
        q = c.list_query()
        page = apps.list_applications(ctx, q.max_results, q.skiptoken)
        return collection(c, "applications", None, page, q)

    async def get_application(c: Call) -> Response:
        body = apps.get_application(ctx, param(c, "application_id"))
        etag, modified = body.pop("eTag"), body.pop("lastModified")
        out = {"odata.metadata": f"{c.base_url}/$metadata#applications/@Element", **body}
        return http.json_response(out, 200, http.entity_headers(etag, modified))

    # --- management (batchyard only)
    uploads = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)

    async def list_managed(c: Call) -> Response:
        return http.json_response({"value": apps.list_managed(ctx)})

    async def get_managed(c: Call) -> Response:
        return http.json_response(apps.get_managed(ctx, param(c, "application_id")))

    async def put_app(c: Call) -> Response:
        spec = decode_settings(await c.request.body())
        view, created = apps.put_application(ctx, param(c, "application_id"), spec)
        return http.json_response(view, 201 if created else 200)

    async def patch_app(c: Call) -> Response:
        spec = decode_settings(await c.request.body())
        return http.json_response(apps.patch_application(ctx, param(c, "application_id"), spec))

    async def delete_app(c: Call) -> Response:
        apps.delete_application(ctx, param(c, "application_id"))
        return http.empty(200)

    async def put_version(c: Call) -> Response:
        app_id, version = param(c, "application_id"), param(c, "version")
        apps.check_app_id(app_id)  # refused before a byte of the body is stored
        apps.check_version(version)
        async with uploads:
            view, created = await apps.upload_version(ctx, app_id, version, _chunks(c.request))
        return http.json_response(view, 201 if created else 200)

    async def delete_version(c: Call) -> Response:
        apps.delete_version(ctx, param(c, "application_id"), param(c, "version"))
        return http.empty(200)

    # --- agents (node token)
    tokens = TokenCheck(ctx)

    def agent(fn: Callable[[Request, str], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            rid = str(uuid.uuid4())
            try:
                node_id = request.headers.get(NODE_ID_HEADER)
                token = request.headers.get(TOKEN_HEADER)
                if not node_id or not token:
                    raise errors.missing_authentication()
                tokens.verify(node_id, token)
                resp = await fn(request, node_id)
            except errors.BatchError as e:
                base = str(request.base_url).rstrip("/")
                resp = http.error_response(e, base, rid, request.method == "HEAD")
            return service_headers(resp, request, rid)

        return endpoint

    async def node_pool_packages(request: Request, node_id: str) -> Response:
        return http.json_response(apps.pool_packages(ctx, node_id))

    async def node_resolve(request: Request, node_id: str) -> Response:
        app_id = str(request.path_params["application_id"])
        version = request.query_params.get("version") or None
        return http.json_response(apps.resolve_one(ctx, app_id, version))

    async def node_content(request: Request, node_id: str) -> Response:
        app_id, version = str(request.path_params["application_id"]), str(request.path_params["version"])
        path, r = apps.package_file(ctx, app_id, version)
        if not path.is_file():
            raise errors.application_package_not_found()
        return FileResponse(path, media_type="application/zip", headers={"x-batchyard-sha256": r.sha256})

    a = "/batchyard/applications/{application_id}"
    table: list[tuple[str, Any, list[str], bool]] = [
        ("/applications", list_applications, ["GET"], False),
        ("/applications/{application_id}", get_application, ["GET"], False),
        ("/batchyard/applications", list_managed, ["GET"], False),
        (a, get_managed, ["GET"], False),
        (a, put_app, ["PUT"], False),
        (a, patch_app, ["PATCH"], False),
        (a, delete_app, ["DELETE"], False),
        (a + "/versions/{version}", put_version, ["PUT"], True),
        (a + "/versions/{version}", delete_version, ["DELETE"], False),
    ]
    out = [Route(path, o(fn, stream=stream), methods=methods) for path, fn, methods, stream in table]
    n = "/batchyard/agent/v1/packages"
    out += [
        Route(n, agent(node_pool_packages), methods=["GET"]),
        Route(n + "/{application_id}", agent(node_resolve), methods=["GET"]),
        Route(n + "/{application_id}/{version}/content", agent(node_content), methods=["GET"]),
    ]
    return out


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (bounded by `limits.BodyLimit`); a client gone mid-upload is a 408."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise errors.request_timeout(0) from None
