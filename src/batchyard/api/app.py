"""The ASGI app: routing, the request pipeline (request id → api-version → auth → handler → errors).

Handlers are thin: they parse the request, call one service function, and render its result (api.render).
Each resource family has its module of handlers and routes (api.pools, api.jobs, api.tasks, api.files,
api.nodes, api.account, ...); this module puts them in one router, in an order where no route hides another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from batchyard.api import account as account_routes
from batchyard.api import agent_sync as agent_proto
from batchyard.api import (
    applications,
    certificates,
    http,
    jobschedules,
    jobtasks,
    node_access,
    poolstats,
    subtasks,
    versions,
)
from batchyard.api import files as file_routes
from batchyard.api import jobs as job_routes
from batchyard.api import nodes as node_routes
from batchyard.api import pools as pool_routes
from batchyard.api import tasks as task_routes
from batchyard.api.health import Readiness
from batchyard.api.limits import REST_MAX_BODY, BodyLimit
from batchyard.api.logs import RequestLog
from batchyard.api.render import Call, Handler, service_headers
from batchyard.api.shared_key import SignedRequest, verify_shared_key
from batchyard.models import errors
from batchyard.models.clock import utcnow
from batchyard.service.context import Ctx

log = logging.getLogger("batchyard.api")

API_VERSIONS = versions.ACCEPTED  # every version since 2018-08-01.7.0, from the generated table
MAX_BODY = REST_MAX_BODY


@dataclass
class Settings:
    account: str
    key: bytes
    public_url: str | None = None
    max_skew: timedelta = timedelta(minutes=15)


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
            return service_headers(resp, request, rid)

        return endpoint

    def error(self, scope: Scope, err: errors.BatchError) -> Response:
        """A Batch error answered outside an operation (no route, body limits), with the usual headers."""
        request = Request(scope)
        rid = str(uuid.uuid4())
        resp = http.error_response(err, self.base_url(request), rid, request.method == "HEAD")
        return service_headers(resp, request, rid)

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


# --- the app --------------------------------------------------------------------------------------------------


def create_app(
    ctx: Ctx, settings: Settings, background: list[Callable[[], Awaitable[None]]] | None = None
) -> ASGIApp:
    """The whole HTTP application: request log -> body limits -> routes."""
    api = Api(ctx, settings)
    o = api.op

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

    n = "/pools/{pool_id}/nodes/{node_id}"
    # first: the router tries routes in order, and agent syncs are most of the requests
    routes = [Route("/batchyard/agent/v1/sync", agent_sync, methods=["POST"])]
    for family in (pool_routes, job_routes, task_routes, file_routes, account_routes):
        routes += family.routes(o, ctx)
    routes += [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    for family in (subtasks, jobtasks, node_routes, certificates, node_access, applications, poolstats):
        routes += family.routes(o, ctx)
    # operations this server does not implement yet: a clear Batch error, never a 404 or a fake success
    # (after every node route: `{action}` matches any of them)
    routes.append(Route(n + "/{action}", o(not_implemented("node operations")), methods=["POST", "GET"]))
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
