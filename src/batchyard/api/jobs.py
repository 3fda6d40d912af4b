"""The /jobs routes: job CRUD, terminate/disable/enable and task counts; thin handlers over service.jobs."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http, versions
from batchyard.api.render import Call, Handler, Op, collection, entity, param, route_table, written
from batchyard.models import wire
from batchyard.service import jobs
from batchyard.service.context import Ctx


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def create(c: Call) -> Response:
        return written(c, jobs.create_job(ctx, await c.body(wire.BatchJobCreateOptions)), 201, location=True)

    async def list_all(c: Call) -> Response:
        q = c.list_query()
        return collection(c, "jobs", lambda b: f"/jobs/{b['id']}", jobs.list_jobs(ctx, q), q)

    async def get(c: Call) -> Response:
        body = jobs.get_job(ctx, param(c, "job_id"), c.cond(), c.list_query().expand)
        return entity(c, "jobs", f"/jobs/{body['id']}", body, c.list_query().select)

    async def patch(c: Call) -> Response:
        spec = await c.body(wire.BatchJobUpdateOptions)
        return written(c, jobs.update_job(ctx, param(c, "job_id"), spec, c.cond(), replace=False), 200)

    async def put(c: Call) -> Response:
        spec = await c.body(wire.BatchJob)
        return written(c, jobs.update_job(ctx, param(c, "job_id"), spec, c.cond(), replace=True), 200)

    async def delete(c: Call) -> Response:
        jobs.delete_job(ctx, param(c, "job_id"), c.cond())
        return http.empty(202)

    async def terminate(c: Call) -> Response:
        spec = await c.body(wire.BatchJobTerminateOptions)
        w = jobs.terminate_job(ctx, param(c, "job_id"), spec.get("terminateReason"), c.cond())
        return written(c, w, 202)

    async def disable(c: Call) -> Response:
        spec = await c.body(wire.BatchJobDisableOptions)
        return written(
            c, jobs.disable_job(ctx, param(c, "job_id"), str(spec.get("disableTasks", "")), c.cond()), 202
        )

    async def enable(c: Call) -> Response:
        await c.body()
        return written(c, jobs.enable_job(ctx, param(c, "job_id"), c.cond()), 202)

    async def task_counts(c: Call) -> Response:
        counts = jobs.task_counts(ctx, param(c, "job_id"))
        counts = versions.response("taskcounts", c.api_version, counts)
        return http.json_response(
            {"odata.metadata": f"{c.base_url}/$metadata#taskcountsresult/@Element", **counts}
        )

    j = "/jobs/{job_id}"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/jobs", create, ["POST"]),
        ("/jobs", list_all, ["GET"]),
        (j, get, ["GET"]),
        (j, patch, ["PATCH"]),
        (j, put, ["PUT"]),
        (j, delete, ["DELETE"]),
        (j + "/terminate", terminate, ["POST"]),
        (j + "/disable", disable, ["POST"]),
        (j + "/enable", enable, ["POST"]),
        (j + "/taskcounts", task_counts, ["GET"]),
    ]
    return route_table(o, table)
