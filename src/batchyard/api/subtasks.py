"""GET /jobs/{job}/tasks/{task}/subtasksinfo: the subtasks of a multi-instance task (service.subtasks)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api.render import Call, Op, absolute, collection, param
from batchyard.service import subtasks
from batchyard.service.context import Ctx

T = "/jobs/{job_id}/tasks/{task_id}"


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def list_subtasks(c: Call) -> Response:
        q = c.list_query()
        items = [
            absolute(c.base_url, s)
            for s in subtasks.list_subtasks(ctx, param(c, "job_id"), param(c, "task_id"))
        ]
        return collection(c, "subtaskinformation", None, (items, None), q)

    return [Route(T + "/subtasksinfo", o(list_subtasks), methods=["GET"])]
