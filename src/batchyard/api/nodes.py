"""Compute nodes: list and get (service.nodes), node operations (reboot, reimage, deallocate/start, scheduling,
remove nodes) and the preemption extension.

Thin handlers over `service.nodes` and `service.nodeops` (registered by app.create_app). The `/batchyard/...`
routes are ours, not Azure's (fault injection for tests and chaos drills); they take the same Shared Key auth
as every route.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http, versions
from batchyard.api.render import Call, Handler, Op, absolute, collection, param, route_table, written
from batchyard.models import errors, wire
from batchyard.models.decode import decode_body
from batchyard.models.resources import select_props
from batchyard.service import nodeops, nodes
from batchyard.service.common import Body
from batchyard.service.context import Ctx

#: Node deallocate and start exist from this api-version on (azure-batch CHANGELOG, 2024-07-01.20.0).
DEALLOCATION_ADDED_IN = "2024-07-01"


async def _options(c: Call, model: type[Any]) -> Body:
    """An options body that may be absent (the SDK sends none when no option is given)."""
    data = await c.request.body()
    if not data.strip():
        return {}
    return await c.body(model)


class _PreemptNode(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    returnAfter: str | None = None


class _PreemptPool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    fraction: float | None = None
    count: int | None = None
    returnAfter: str | None = None


class _Chaos(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    preemptionsPerNodeHour: float
    returnAfter: str | None = None


async def _extension_body(c: Call, model: type[msgspec.Struct]) -> Body:
    """An extension route's body: the same decoding, limits and errors as the Batch routes' bodies."""
    data = await c.request.body()
    try:
        obj = decode_body(data, model, required=False)
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a JSON string
        raise errors.invalid_request_body(f"The body is not valid UTF-8 (byte {exc.start})") from None
    return {k: v for k, v in msgspec.structs.asdict(obj).items() if v is not None}


def _since_deallocation(c: Call) -> None:
    """An older api-version has no such operation: the URI is unknown there, as for removed operations."""
    if c.api_version < DEALLOCATION_ADDED_IN:
        raise errors.invalid_uri()


def routes(o: Op, ctx: Ctx) -> list[Route]:
    def ids(c: Call) -> tuple[str, str]:
        return param(c, "pool_id"), param(c, "node_id")

    async def list_nodes(c: Call) -> Response:
        q = c.list_query()
        pool_id = param(c, "pool_id")
        page = nodes.list_nodes(ctx, pool_id, q)
        return collection(c, "nodes", lambda b: f"/pools/{pool_id}/nodes/{b['id']}", page, q)

    async def get_node(c: Call) -> Response:
        pool_id, node_id = ids(c)
        body = nodes.get_node(ctx, pool_id, node_id)
        body = absolute(c.base_url, dict(body, url=f"{c.base_url}/pools/{pool_id}/nodes/{body['id']}"))
        body = versions.response("nodes", c.api_version, body)
        out = {"odata.metadata": f"{c.base_url}/$metadata#nodes/@Element"}
        out.update(select_props(body, c.list_query().select))
        return http.json_response(out)

    async def reboot(c: Call) -> Response:
        spec = await _options(c, wire.BatchNodeRebootOptions)
        return written(c, nodeops.reboot_node(ctx, *ids(c), spec), 202)

    async def reimage(c: Call) -> Response:
        spec = await _options(c, wire.BatchNodeReimageOptions)
        return written(c, nodeops.reimage_node(ctx, *ids(c), spec), 202)

    async def deallocate(c: Call) -> Response:
        _since_deallocation(c)
        spec = await _options(c, wire.BatchNodeDeallocateOptions)
        return written(c, nodeops.deallocate_node(ctx, *ids(c), spec), 202)

    async def start(c: Call) -> Response:
        _since_deallocation(c)
        await c.body()
        return written(c, nodeops.start_node(ctx, *ids(c)), 202)

    async def disable_scheduling(c: Call) -> Response:
        spec = await _options(c, wire.BatchNodeDisableSchedulingOptions)
        return written(c, nodeops.disable_scheduling(ctx, *ids(c), spec), 200)

    async def enable_scheduling(c: Call) -> Response:
        await c.body()
        return written(c, nodeops.enable_scheduling(ctx, *ids(c)), 200)

    async def remove_nodes(c: Call) -> Response:
        spec = await c.body(wire.BatchNodeRemoveOptions)
        return written(c, nodeops.remove_nodes(ctx, param(c, "pool_id"), spec, c.cond()), 202)

    # --- batchyard extensions ---
    async def preempt_node(c: Call) -> Response:
        spec = await _extension_body(c, _PreemptNode)
        return http.json_response(nodeops.preempt_node(ctx, *ids(c), spec))

    async def preempt_pool(c: Call) -> Response:
        spec = await _extension_body(c, _PreemptPool)
        return http.json_response(nodeops.preempt_pool(ctx, param(c, "pool_id"), spec))

    async def get_chaos(c: Call) -> Response:
        return http.json_response(nodeops.get_chaos(ctx, param(c, "pool_id")))

    async def put_chaos(c: Call) -> Response:
        return http.json_response(
            nodeops.set_chaos(ctx, param(c, "pool_id"), await _extension_body(c, _Chaos))
        )

    P = "/pools/{pool_id}"
    N = P + "/nodes/{node_id}"
    X = "/batchyard" + P
    table: list[tuple[str, Handler, list[str]]] = [
        (P + "/nodes", list_nodes, ["GET"]),
        (N, get_node, ["GET"]),
        (P + "/removenodes", remove_nodes, ["POST"]),
        (N + "/reboot", reboot, ["POST"]),
        (N + "/reimage", reimage, ["POST"]),
        (N + "/deallocate", deallocate, ["POST"]),
        (N + "/start", start, ["POST"]),
        (N + "/disablescheduling", disable_scheduling, ["POST"]),
        (N + "/enablescheduling", enable_scheduling, ["POST"]),
        (X + "/nodes/{node_id}/preempt", preempt_node, ["POST"]),
        (X + "/preempt", preempt_pool, ["POST"]),
        (X + "/chaos", get_chaos, ["GET"]),
        (X + "/chaos", put_chaos, ["PUT"]),
    ]
    return route_table(o, table)
