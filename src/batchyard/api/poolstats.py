"""Pool usage routes: `GET /lifetimepoolstats` (api-versions up to 2023-05-01.17.0) and `GET /poolusagemetrics`;
thin handlers over service.usage (registered by app.create_app; pool `$expand=stats` is in the pool reads)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.account import LIFETIME_STATS_REMOVED_IN
from batchyard.api.render import Call, Op, collection
from batchyard.models import errors
from batchyard.service import usage
from batchyard.service.context import Ctx


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def lifetime_pool_stats(c: Call) -> Response:
        if c.api_version >= LIFETIME_STATS_REMOVED_IN:
            raise errors.invalid_uri()
        body = usage.lifetime_pool_stats(ctx, f"{c.base_url}/lifetimepoolstats")
        return http.json_response({"odata.metadata": f"{c.base_url}/$metadata#poolstats/@Element", **body})

    async def usage_metrics(c: Call) -> Response:
        q = c.list_query()
        page = usage.usage_metrics(
            ctx, q, c.q("starttime") or c.q("startTime"), c.q("endtime") or c.q("endTime")
        )
        return collection(c, "poolusagemetrics", None, page, q)

    return [
        Route("/lifetimepoolstats", o(lifetime_pool_stats), methods=["GET"]),
        Route("/poolusagemetrics", o(usage_metrics), methods=["GET"]),
    ]
