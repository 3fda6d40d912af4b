"""The files routes of tasks and nodes: list, get (or HEAD, with ocp-range), delete; thin handlers over
service.files, which walks each path from the node root without following links."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.render import Call, Handler, Op, collection, file_response, param, route_table
from batchyard.service import files
from batchyard.service.context import Ctx


def _path(c: Call) -> str:
    return unquote(str(c.request.path_params["file_path"]))


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def list_task_files(c: Call) -> Response:
        q = c.list_query()
        page = await files.list_task_files(
            ctx, param(c, "job_id"), param(c, "task_id"), c.flag("recursive"), q
        )
        return collection(c, "files", None, page, q)

    async def task_file(c: Call) -> Response:
        job_id, task_id, path = param(c, "job_id"), param(c, "task_id"), _path(c)
        opened = await files.task_file(ctx, job_id, task_id, path)
        return file_response(c, opened, f"/jobs/{job_id}/tasks/{task_id}/files/{path}")

    async def delete_task_file(c: Call) -> Response:
        await files.delete_task_file(
            ctx, param(c, "job_id"), param(c, "task_id"), _path(c), c.flag("recursive")
        )
        return http.empty(200)

    async def list_node_files(c: Call) -> Response:
        q = c.list_query()
        page = await files.list_node_files(
            ctx, param(c, "pool_id"), param(c, "node_id"), c.flag("recursive"), q
        )
        return collection(c, "files", None, page, q)

    async def node_file(c: Call) -> Response:
        pool_id, node_id, path = param(c, "pool_id"), param(c, "node_id"), _path(c)
        opened = await files.node_file(ctx, pool_id, node_id, path)
        return file_response(c, opened, f"/pools/{pool_id}/nodes/{node_id}/files/{path}")

    async def delete_node_file(c: Call) -> Response:
        await files.delete_node_file(
            ctx, param(c, "pool_id"), param(c, "node_id"), _path(c), c.flag("recursive")
        )
        return http.empty(200)

    n = "/pools/{pool_id}/nodes/{node_id}"
    t = "/jobs/{job_id}/tasks/{task_id}"
    table: list[tuple[str, Handler, list[str]]] = [
        (n + "/files", list_node_files, ["GET"]),
        (n + "/files/{file_path:path}", node_file, ["GET", "HEAD"]),
        (n + "/files/{file_path:path}", delete_node_file, ["DELETE"]),
        (t + "/files", list_task_files, ["GET"]),
        (t + "/files/{file_path:path}", task_file, ["GET", "HEAD"]),
        (t + "/files/{file_path:path}", delete_task_file, ["DELETE"]),
    ]
    return route_table(o, table)
