"""The /jobs/{job}/tasks routes: add (one or a collection), list, get, replace, delete, terminate, reactivate;
thin handlers over service.tasks. A plain task list page is spliced from the stored JSON (api.rawlist)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http, rawlist, versions
from batchyard.api.render import (
    Call,
    Handler,
    Op,
    absolute,
    collection,
    entity,
    next_link,
    param,
    route_table,
    written,
)
from batchyard.models import wire
from batchyard.service import files, tasks
from batchyard.service.common import Body
from batchyard.service.context import Ctx


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def create(c: Call) -> Response:
        w = tasks.create_task(ctx, param(c, "job_id"), await c.body(wire.BatchTaskCreateOptions))
        return written(c, w, 201, location=True)

    async def add_collection(c: Call) -> Response:
        group = await c.body(wire.BatchTaskGroup)
        results = tasks.add_collection(ctx, param(c, "job_id"), list(group.get("value") or []), c.base_url)
        return http.json_response(
            {
                "odata.metadata": f"{c.base_url}/$metadata#taskaddresult",
                "value": [versions.response("taskaddresult", c.api_version, r) for r in results],
            }
        )

    async def list_all(c: Call) -> Response:
        q = c.list_query()
        job_id = param(c, "job_id")
        skip = None if q.select or q.expand else rawlist.needles("task", c.api_version)
        page = tasks.list_task_texts(ctx, job_id, q) if skip is not None else None
        if skip is not None and page is not None:  # stored JSON as it is (api.rawlist)
            base = f"{c.base_url}/jobs/{job_id}/tasks/"

            def slow(it: Body) -> Body:
                return versions.response(
                    "tasks", c.api_version, absolute(c.base_url, dict(it, url=base + it["id"]))
                )

            rows, token = page
            data = rawlist.page_bytes(
                f"{c.base_url}/$metadata#tasks",
                rows,
                lambda task_id: base + task_id,
                slow,
                skip,
                next_link(c, q, token) if token else None,
            )
            return Response(data, media_type=http.JSON_TYPE)
        return collection(
            c, "tasks", lambda b: f"/jobs/{job_id}/tasks/{b['id']}", tasks.list_tasks(ctx, job_id, q), q
        )

    async def get(c: Call) -> Response:
        job_id = param(c, "job_id")
        body = tasks.get_task(ctx, job_id, param(c, "task_id"), c.cond(), c.list_query().expand)
        return entity(c, "tasks", f"/jobs/{job_id}/tasks/{body['id']}", body, c.list_query().select)

    async def put(c: Call) -> Response:
        spec = await c.body(wire.BatchTask)
        w = tasks.replace_task(ctx, param(c, "job_id"), param(c, "task_id"), spec, c.cond())
        return written(c, w, 200)

    async def delete(c: Call) -> Response:
        removed = tasks.delete_task(ctx, param(c, "job_id"), param(c, "task_id"), c.cond())
        files.remove_task_files(ctx, *removed)
        return http.empty(200)

    async def terminate(c: Call) -> Response:
        await c.body()
        w = tasks.terminate_task(ctx, param(c, "job_id"), param(c, "task_id"), c.cond())
        return written(c, w, 204)

    async def reactivate(c: Call) -> Response:
        await c.body()
        w = tasks.reactivate_task(ctx, param(c, "job_id"), param(c, "task_id"), c.cond())
        return written(c, w, 204)

    j = "/jobs/{job_id}"
    t = j + "/tasks/{task_id}"
    table: list[tuple[str, Handler, list[str]]] = [
        (j + "/tasks", create, ["POST"]),
        (j + "/tasks", list_all, ["GET"]),
        (j + "/addtaskcollection", add_collection, ["POST"]),
        (t, get, ["GET"]),
        (t, put, ["PUT"]),
        (t, delete, ["DELETE"]),
        (t + "/terminate", terminate, ["POST"]),
        (t + "/reactivate", reactivate, ["POST"]),
    ]
    return route_table(o, table)
