"""`GET /jobs/{id}/jobpreparationandreleasetaskstatus`: the per-node status of a job's Job Preparation and
Job Release tasks (service.jobprep); registered by app.create_app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchyard.api.app import Call, _list, _p
from batchyard.service import jobprep
from batchyard.service.common import Body
from batchyard.service.context import Ctx

Op = Callable[[Callable[[Call], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]

KIND = "jobpreparationandreleasetaskstatuslist"


def _absolute(base: str, item: Body) -> Body:
    """Node and directory urls are absolute, like every url the service returns."""
    out = dict(item, nodeUrl=base + item["nodeUrl"])
    for k in ("jobPreparationTaskExecutionInfo", "jobReleaseTaskExecutionInfo"):
        info = out.get(k)
        if isinstance(info, dict) and str(info.get("taskRootDirectoryUrl", "")).startswith("/"):
            out[k] = dict(info, taskRootDirectoryUrl=base + info["taskRootDirectoryUrl"])
    return out


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def status(c: Call) -> Response:
        q = c.list_query()
        items, token = jobprep.list_status(ctx, _p(c, "job_id"), q)
        return _list(c, KIND, None, ([_absolute(c.base_url, i) for i in items], token), q)

    return [Route("/jobs/{job_id}/jobpreparationandreleasetaskstatus", o(status), methods=["GET"])]
