"""GET /jobs/{job}/tasks/{task}/subtasksinfo: the subtasks of a multi-instance task (service.subtasks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchyard.api.app import Call, _absolute, _list, _p
from batchyard.service import subtasks
from batchyard.service.context import Ctx

Op = Callable[[Callable[[Call], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]

T = "/jobs/{job_id}/tasks/{task_id}"


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def list_subtasks(c: Call) -> Response:
        q = c.list_query()
        items = [
            _absolute(c.base_url, s) for s in subtasks.list_subtasks(ctx, _p(c, "job_id"), _p(c, "task_id"))
        ]
        return _list(c, "subtaskinformation", None, (items, None), q)

    return [Route(T + "/subtasksinfo", o(list_subtasks), methods=["GET"])]
