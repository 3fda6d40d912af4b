"""The /certificates routes (legacy operations the service still answers; decision 0130)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from batchyard.api import http
from batchyard.api.render import Call, Handler, Op, collection, param, route_table, written
from batchyard.models.certificates import CertificateAddOptions, path_of
from batchyard.models.resources import select_props
from batchyard.service import certificates as certs
from batchyard.service.common import Body
from batchyard.service.context import Ctx

#: The service's property order (recorded get/list bodies).
_ORDER = (
    "thumbprint",
    "thumbprintAlgorithm",
    "url",
    "state",
    "stateTransitionTime",
    "previousState",
    "previousStateTransitionTime",
    "publicData",
    "deleteCertificateError",
)


def _shape(base: str, body: Body) -> Body:
    full = dict(body, url=base + path_of(body["thumbprintAlgorithm"], body["thumbprint"]))
    return {k: full[k] for k in _ORDER if k in full}


def routes(o: Op, ctx: Ctx) -> list[Route]:
    async def create(c: Call) -> Response:
        w = certs.create_certificate(ctx, await c.body(CertificateAddOptions))
        return written(c, w, 201, location=True)

    async def list_all(c: Call) -> Response:
        q = c.list_query()
        items, token = certs.list_certificates(ctx, q)
        return collection(c, "certificates", None, ([_shape(c.base_url, b) for b in items], token), q)

    def _key(c: Call) -> tuple[str, str]:
        return param(c, "thumbprint_algorithm"), param(c, "thumbprint")

    async def get(c: Call) -> Response:
        body = certs.get_certificate(ctx, *_key(c))
        out: Body = {"odata.metadata": f"{c.base_url}/$metadata#certificates/@Element"}
        out.update(select_props(_shape(c.base_url, body), c.list_query().select))
        return http.json_response(out, 200, http.entity_headers(body["_etag"], body["_lastModified"]))

    async def delete(c: Call) -> Response:
        await c.body()
        certs.delete_certificate(ctx, *_key(c))
        return http.empty(202)

    async def cancel_delete(c: Call) -> Response:
        await c.body()
        certs.cancel_deletion(ctx, *_key(c))
        alg, tp = _key(c)
        return http.empty(204, {"DataServiceId": f"{c.base_url}{path_of(alg, tp.lower())}/canceldelete"})

    entity = "/certificates(thumbprintAlgorithm={thumbprint_algorithm},thumbprint={thumbprint})"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/certificates", create, ["POST"]),
        ("/certificates", list_all, ["GET"]),
        (entity, get, ["GET"]),
        (entity, delete, ["DELETE"]),
        (entity + "/canceldelete", cancel_delete, ["POST"]),
    ]
    return route_table(o, table)
