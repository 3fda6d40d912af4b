"""`GET /jobs/{id}/jobpreparationandreleasetaskstatus`: the per-node status of a job's Job Preparation and
Job Release tasks (service.jobprep); registered by app.create_app."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api.render import Call, Op, collection, param
from batchyard.service import jobprep
from batchyard.service.common import Body
from batchyard.service.context import Ctx

KIND = "jobpreparationandreleasetaskstatuslist"


def absolute(base: str, item: Body) -> Body:
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
        items, token = jobprep.list_status(ctx, param(c, "job_id"), q)
        return collection(c, KIND, None, ([absolute(c.base_url, i) for i in items], token), q)

    return [Route("/jobs/{job_id}/jobpreparationandreleasetaskstatus", o(status), methods=["GET"])]
