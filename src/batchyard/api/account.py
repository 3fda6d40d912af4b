"""Account-level routes: supported images, node counts per pool, lifetime job statistics (older api-versions)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.render import Call, Handler, Op, collection, route_table
from batchyard.models import errors
from batchyard.service import account, nodes
from batchyard.service.context import Ctx

#: The account lifetime statistics operations exist up to 2023-05-01.17.0 (dropped from the next spec).
LIFETIME_STATS_REMOVED_IN = "2023-11-01"


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def supported_images(c: Call) -> Response:
        q = c.list_query()
        return collection(c, "supportedimages", None, nodes.supported_images(q), q)

    async def node_counts(c: Call) -> Response:
        q = c.list_query()
        return collection(c, "poolnodecounts", None, nodes.node_counts(ctx, q), q)

    async def lifetime_job_stats(c: Call) -> Response:
        if c.api_version >= LIFETIME_STATS_REMOVED_IN:
            raise errors.invalid_uri()
        body = account.lifetime_job_stats(ctx, f"{c.base_url}/lifetimejobstats")
        return http.json_response({"odata.metadata": f"{c.base_url}/$metadata#jobstats/@Element", **body})

    table: list[tuple[str, Handler, list[str]]] = [
        ("/supportedimages", supported_images, ["GET"]),
        ("/nodecounts", node_counts, ["GET"]),
        ("/lifetimejobstats", lifetime_job_stats, ["GET"]),
    ]
    return route_table(o, table)
