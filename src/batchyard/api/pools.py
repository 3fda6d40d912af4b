"""The /pools routes: pool CRUD, resize and autoscale; thin handlers over service.pools and service.autoscale."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.render import Call, Handler, Op, collection, entity, param, route_table, written
from batchyard.models import wire
from batchyard.service import autoscale, pools
from batchyard.service.context import Ctx


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def create(c: Call) -> Response:
        w = pools.create_pool(ctx, await c.body(wire.BatchPoolCreateOptions))
        return written(c, w, 201, location=True)

    async def list_all(c: Call) -> Response:
        q = c.list_query()
        return collection(c, "pools", lambda b: f"/pools/{b['id']}", pools.list_pools(ctx, q), q)

    async def get(c: Call) -> Response:
        body = pools.get_pool(ctx, param(c, "pool_id"), c.cond(), c.list_query().expand)
        if c.request.method == "HEAD":
            return http.empty(200, http.entity_headers(body["eTag"], body["lastModified"]))
        return entity(c, "pools", f"/pools/{body['id']}", body, c.list_query().select)

    async def delete(c: Call) -> Response:
        pools.delete_pool(ctx, param(c, "pool_id"), c.cond())
        return http.empty(202)

    async def patch(c: Call) -> Response:
        w = pools.patch_pool(ctx, param(c, "pool_id"), await c.body(wire.BatchPoolUpdateOptions), c.cond())
        return written(c, w, 200)

    async def update_properties(c: Call) -> Response:
        w = pools.replace_pool_properties(
            ctx, param(c, "pool_id"), await c.body(wire.BatchPoolReplaceOptions)
        )
        return written(c, w, 204)

    async def resize(c: Call) -> Response:
        w = pools.resize_pool(ctx, param(c, "pool_id"), await c.body(wire.BatchPoolResizeOptions), c.cond())
        return written(c, w, 202)

    async def stop_resize(c: Call) -> Response:
        await c.body()
        return written(c, pools.stop_resize(ctx, param(c, "pool_id"), c.cond()), 202)

    async def enable_autoscale(c: Call) -> Response:
        spec = await c.body(wire.BatchPoolEnableAutoScaleOptions)
        return written(c, autoscale.enable(ctx, param(c, "pool_id"), spec, c.cond()), 200)

    async def disable_autoscale(c: Call) -> Response:
        await c.body()
        return written(c, autoscale.disable(ctx, param(c, "pool_id"), c.cond()), 200)

    async def evaluate_autoscale(c: Call) -> Response:
        run = autoscale.evaluate(
            ctx, param(c, "pool_id"), await c.body(wire.BatchPoolEvaluateAutoScaleOptions)
        )
        meta = f"{c.base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun"
        return http.json_response(
            {"odata.metadata": meta, **run}, headers={"DataServiceId": c.base_url + c.request.url.path}
        )

    async def autoscale_history(c: Call) -> Response:  # batchyard-only
        return http.json_response(autoscale.history(ctx, param(c, "pool_id")))

    p = "/pools/{pool_id}"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/pools", create, ["POST"]),
        ("/pools", list_all, ["GET"]),
        (p, get, ["GET", "HEAD"]),
        (p, delete, ["DELETE"]),
        (p, patch, ["PATCH"]),
        (p + "/updateproperties", update_properties, ["POST"]),
        (p + "/resize", resize, ["POST"]),
        (p + "/stopresize", stop_resize, ["POST"]),
        (p + "/enableautoscale", enable_autoscale, ["POST"]),
        (p + "/disableautoscale", disable_autoscale, ["POST"]),
        (p + "/evaluateautoscale", evaluate_autoscale, ["POST"]),
        ("/batchyard" + p + "/autoscalehistory", autoscale_history, ["GET"]),
    ]
    return route_table(o, table)
