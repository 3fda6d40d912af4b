"""The /jobschedules routes: thin handlers over service.jobschedules (registered by app.create_app)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.render import Call, Handler, Op, collection, entity, param, route_table, written
from batchyard.models import wire
from batchyard.service import jobschedules as js
from batchyard.service.common import Body
from batchyard.service.context import Ctx


def _urls(base: str, body: Body) -> Body:
    """The recent job's url is absolute, like every resource url."""
    ei = body.get("executionInfo")
    if not isinstance(ei, dict):
        return body
    recent = ei.get("recentJob")
    if isinstance(recent, dict) and str(recent.get("url", "")).startswith("/"):
        body = dict(body, executionInfo=dict(ei, recentJob=dict(recent, url=base + recent["url"])))
    return body


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def create(c: Call) -> Response:
        w = js.create_schedule(ctx, await c.body(wire.BatchJobScheduleCreateOptions))
        return written(c, w, 201, location=True)

    async def list_all(c: Call) -> Response:
        q = c.list_query()
        items, token = js.list_schedules(ctx, q)
        page = ([_urls(c.base_url, b) for b in items], token)
        return collection(c, "jobschedules", lambda b: f"/jobschedules/{b['id']}", page, q)

    async def get(c: Call) -> Response:
        q = c.list_query()
        body = js.get_schedule(ctx, param(c, "schedule_id"), c.cond(), q.expand)
        if c.request.method == "HEAD":
            return http.empty(200, http.entity_headers(body["eTag"], body["lastModified"]))
        return entity(c, "jobschedules", f"/jobschedules/{body['id']}", _urls(c.base_url, body), q.select)

    async def patch(c: Call) -> Response:
        spec = await c.body(wire.BatchJobScheduleUpdateOptions)
        return written(
            c, js.update_schedule(ctx, param(c, "schedule_id"), spec, c.cond(), replace=False), 200
        )

    async def put(c: Call) -> Response:
        spec = await c.body(wire.BatchJobSchedule)
        return written(c, js.update_schedule(ctx, param(c, "schedule_id"), spec, c.cond(), replace=True), 200)

    async def delete(c: Call) -> Response:
        await c.body()
        js.delete_schedule(ctx, param(c, "schedule_id"), c.cond())
        return http.empty(202)

    async def disable(c: Call) -> Response:
        await c.body()
        return written(c, js.disable_schedule(ctx, param(c, "schedule_id"), c.cond()), 204)

    async def enable(c: Call) -> Response:
        await c.body()
        return written(c, js.enable_schedule(ctx, param(c, "schedule_id"), c.cond()), 204)

    async def terminate(c: Call) -> Response:
        await c.body()
        return written(c, js.terminate_schedule(ctx, param(c, "schedule_id"), c.cond()), 202)

    async def list_jobs(c: Call) -> Response:
        q = c.list_query()
        page = js.list_jobs(ctx, param(c, "schedule_id"), q)
        return collection(c, "jobs", lambda b: f"/jobs/{b['id']}", page, q)

    s = "/jobschedules/{schedule_id}"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/jobschedules", create, ["POST"]),
        ("/jobschedules", list_all, ["GET"]),
        (s, get, ["GET", "HEAD"]),
        (s, patch, ["PATCH"]),
        (s, put, ["PUT"]),
        (s, delete, ["DELETE"]),
        (s + "/disable", disable, ["POST"]),
        (s + "/enable", enable, ["POST"]),
        (s + "/terminate", terminate, ["POST"]),
        (s + "/jobs", list_jobs, ["GET"]),
    ]
    return route_table(o, table)
