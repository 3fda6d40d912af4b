"""Response rendering: the service's JSON, headers and error shape, written once."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec
from starlette.responses import Response

from batchyard.models.clock import format_http_date, format_time, parse_time, utcnow
from batchyard.models.errors import BatchError

JSON_TYPE = "application/json;odata=minimalmetadata"
_enc = msgspec.json.Encoder()


def base_headers(request_id: str, client_request_id: str | None) -> dict[str, str]:
    h = {"request-id": request_id, "DataServiceVersion": "3.0", "X-Content-Type-Options": "nosniff"}
    if client_request_id:
        h["client-request-id"] = client_request_id
    return h


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_enc.encode(body), status_code=status, headers=headers, media_type=JSON_TYPE)


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", status_code=status, headers=headers)


def error_response(err: BatchError, base_url: str, request_id: str, head: bool = False) -> Response:
    if err.status == 304:
        return Response(b"", status_code=304)
    body: dict[str, Any] = {
        "odata.metadata": f"{base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": err.code,
        "message": {
            "lang": "en-US",
            "value": f"{err.message}\nRequestId:{request_id}\nTime:{format_time(utcnow())}",
        },
    }
    if err.values:
        body["values"] = [{"key": k, "value": v} for k, v in err.values]
    if head:
        return Response(b"", status_code=err.status)
    return json_response(body, err.status)


def entity_headers(etag: str, last_modified: str) -> dict[str, str]:
    return {"ETag": etag, "Last-Modified": format_http_date(parse_time(last_modified))}


def write_headers(
    base_url: str, etag: str, last_modified: str, path: str, location: bool = False
) -> dict[str, str]:
    h = entity_headers(etag, last_modified)
    h["DataServiceId"] = base_url + path
    if location:
        h["Location"] = base_url + path
    return h


def file_url_header(base_url: str, path: str) -> str:
    return quote(base_url + path, safe="")
