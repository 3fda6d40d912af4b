"""Reaching a compute node: node users, remote login settings, the node's service logs and its VM extensions.

Node users are real accounts of this host made by the server for its local nodes (decision 0131); remote login
goes through the server's port forwarder (decision 0132); logs are uploaded with the blob client (0133).
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.render import Call, Handler, Op, collection, param, route_table
from batchyard.models import errors, wire
from batchyard.pools.hostusers import HostAccounts
from batchyard.service import node_access
from batchyard.service import node_users as nu
from batchyard.service.common import Body
from batchyard.service.context import Ctx

#: `GET …/rdp` is gone from this api-version on (the 2024-07-01.20.0 spec dropped it).
RDP_REMOVED_IN = "2024-07-01"


def routes(o: Op, ctx: Ctx) -> list[Route]:
    accounts = HostAccounts(ctx.data_dir)
    # one node-user change at a time: the check against the node's record, the host change and the new record
    # must not interleave with another request for the same name (the host tools serialize anyway)
    users_lock = asyncio.Lock()

    def _where(c: Call) -> tuple[str, str]:
        return param(c, "pool_id"), param(c, "node_id")

    async def create_user(c: Call) -> Response:
        spec = await c.body(wire.BatchNodeUserCreateOptions)
        t = nu.target(ctx, *_where(c))
        name = nu.check_name(spec.get("name"), t.os_type)
        user = nu.check_spec(ctx, t, name, spec, bool(spec.get("isAdmin", False)))
        async with users_lock:
            if name in nu.users_of(ctx, t.node_id):
                raise errors.node_user_exists()
            await asyncio.to_thread(
                accounts.create,
                t.node_id,
                name,
                is_admin=user.is_admin,
                expiry=user.expiry,
                password=user.password,
                ssh_key=user.ssh_public_key,
            )
            if not nu.record(ctx, t.node_id, name, user.record()):  # the node left meanwhile
                await asyncio.to_thread(accounts.delete, t.node_id, name)
                raise errors.node_not_found()
        path = f"{c.base_url}/pools/{t.pool_id}/nodes/{t.node_id}/users/{name}"
        return http.empty(201, {"DataServiceId": path, "Location": path})

    async def replace_user(c: Call) -> Response:
        spec = await c.body(wire.BatchNodeUserReplaceOptions)
        t = nu.target(ctx, *_where(c))
        name = param(c, "user_name")
        async with users_lock:
            users = nu.users_of(ctx, t.node_id)
            if name not in users:
                raise errors.node_user_not_found()
            user = nu.check_spec(ctx, t, name, spec, bool(users[name].get("isAdmin", False)))
            await asyncio.to_thread(
                accounts.replace,
                t.node_id,
                name,
                expiry=user.expiry,
                password=user.password,
                ssh_key=user.ssh_public_key,
            )
            nu.record(ctx, t.node_id, name, user.record())
        return http.empty(
            200, {"DataServiceId": f"{c.base_url}/pools/{t.pool_id}/nodes/{t.node_id}/users/{name}"}
        )

    async def delete_user(c: Call) -> Response:
        await c.body()
        t = nu.target(ctx, *_where(c))
        name = param(c, "user_name")
        async with users_lock:
            if name not in nu.users_of(ctx, t.node_id):
                raise errors.node_user_not_found()
            await asyncio.to_thread(accounts.delete, t.node_id, name)
            nu.record(ctx, t.node_id, name, None)
        return http.empty(200)

    async def remote_login(c: Call) -> Response:
        body = node_access.remote_login_settings(ctx, *_where(c))
        out: Body = {
            "odata.metadata": f"{c.base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.RemoteLoginSettings",
            **body,
        }
        return http.json_response(out, 200, {"DataServiceId": f"{c.base_url}{c.request.url.path}"})

    async def remote_desktop(c: Call) -> Response:
        """The legacy RDP file (removed in 2024-07-01.20.0): cloud service pools only, and none exist any more."""
        if c.api_version >= RDP_REMOVED_IN:
            raise errors.invalid_uri()
        nu.target(ctx, *_where(c), need_up=False)  # 404 for an unknown pool or node first
        raise errors.remote_desktop_needs_cloud_service()

    async def upload_logs(c: Call) -> Response:
        spec = await c.body(wire.UploadBatchServiceLogsOptions)
        body = await node_access.upload_logs(ctx, *_where(c), spec, c.request_id)
        out: Body = {
            "odata.metadata": f"{c.base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities."
            "UploadBatchServiceLogsResult",
            **body,
        }
        return http.json_response(out)

    async def list_extensions(c: Call) -> Response:
        q = c.list_query()
        return collection(c, "extensions", None, node_access.list_extensions(ctx, *_where(c), q), q)

    async def get_extension(c: Call) -> Response:
        node_access.get_extension(ctx, *_where(c), param(c, "extension_name"))

    n = "/pools/{pool_id}/nodes/{node_id}"
    table: list[tuple[str, Handler, list[str]]] = [
        (n + "/users", create_user, ["POST"]),
        (n + "/users/{user_name}", replace_user, ["PUT"]),
        (n + "/users/{user_name}", delete_user, ["DELETE"]),
        (n + "/remoteloginsettings", remote_login, ["GET"]),
        (n + "/rdp", remote_desktop, ["GET"]),
        (n + "/uploadbatchservicelogs", upload_logs, ["POST"]),
        (n + "/extensions", list_extensions, ["GET"]),
        (n + "/extensions/{extension_name}", get_extension, ["GET"]),
    ]
    return route_table(o, table)
