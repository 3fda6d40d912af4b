"""Raw HTTP against a live server, signed with Shared Key exactly as the official SDK signs.

`BatchClient.send_request` signs too, but its `BatchExceptionPolicy` raises on every non-2xx answer; these
tests want to look at error responses as they are, so this builds an azure-core pipeline with only the
SDK's own `BatchSharedKeyAuthPolicy` (and no retries, so a 5xx is seen once, as sent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core import PipelineClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline.policies import HeadersPolicy
from azure.core.rest import HttpRequest, HttpResponse

from tests.support.live import LiveServer, wait_for

API_VERSION = "2025-06-01"
JSON_CT = "application/json; odata=minimalmetadata"
IMAGE = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}
SKU = "batch.node.ubuntu 22.04"
_MESSAGE_TAIL = re.compile(
    r"\nRequestId:(?P<rid>[0-9a-fA-F-]+)\nTime:(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z)$"
)


def pool_body(pool_id: str, nodes: int | str = 0, **extra: Any) -> dict[str, Any]:
    """A minimal valid pool-create body in wire form."""
    body: dict[str, Any] = {
        "id": pool_id,
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": {"imageReference": dict(IMAGE), "nodeAgentSKUId": SKU},
        "targetDedicatedNodes": nodes,
    }
    body.update(extra)
    return body


class Raw:
    """Send requests to `live` with or without a valid Shared Key signature and get the raw response."""

    def __init__(self, live: LiveServer) -> None:
        self.endpoint = live.endpoint
        self.account = live.account
        self.key = live.key
        self._signed = self._pipeline(live.key)

    def _pipeline(self, key: str | None) -> PipelineClient[HttpRequest, HttpResponse]:
        policies: list[Any] = [HeadersPolicy()]
        if key is not None:
            policies.append(BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(self.account, key)))
        return PipelineClient(self.endpoint, policies=policies)

    def url(
        self, path: str, params: dict[str, Any] | None = None, api_version: str | None = API_VERSION
    ) -> str:
        query: dict[str, Any] = {}
        if api_version is not None:
            query["api-version"] = api_version
        query.update(params or {})
        qs = urlencode(query, quote_via=quote, safe=",")
        return f"{self.endpoint}{path}" + (f"?{qs}" if qs else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        api_version: str | None = API_VERSION,
        key: str | None = "",
        url: str | None = None,
    ) -> HttpResponse:
        """`key=""` signs with the server's key, `key=None` sends no Authorization, any other key signs badly."""
        h = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body)
        if isinstance(content, str):
            content = content.encode()
        if content is not None:
            h.setdefault("content-type", JSON_CT)
        req = HttpRequest(method, url or self.url(path, params, api_version), content=content, headers=h)
        client = self._signed if key == "" else self._pipeline(key)
        resp = client.send_request(req)
        resp.read()
        return resp

    def get(self, path: str, **kw: Any) -> HttpResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> HttpResponse:
        return self.request("POST", path, json_body=body, **kw)

    def delete(self, path: str, **kw: Any) -> HttpResponse:
        return self.request("DELETE", path, **kw)

    def json(self, path: str, **kw: Any) -> Any:
        """GET and return the JSON body, asserting 200."""
        r = self.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text())
        return r.json()


def assert_headers(resp: HttpResponse) -> str:
    """Every response carries request-id and DataServiceVersion: 3.0; returns the request id."""
    rid = resp.headers.get("request-id")
    assert rid, f"no request-id header: {dict(resp.headers)}"
    assert resp.headers.get("DataServiceVersion") == "3.0", dict(resp.headers)
    return rid


def assert_error(resp: HttpResponse, status: int, code: str, **values: str) -> dict[str, Any]:
    """A Batch error in the real service's shape; `values` must appear among the body's key/value details."""
    assert resp.status_code == status, f"expected {status} {code}, got {resp.status_code}: {resp.text()}"
    rid = assert_headers(resp)
    assert resp.headers.get("content-type", "").startswith("application/json"), dict(resp.headers)
    body: dict[str, Any] = resp.json()
    assert body["code"] == code, body
    assert body["message"]["lang"] == "en-US", body
    m = _MESSAGE_TAIL.search(body["message"]["value"])
    assert m, f"message does not end with RequestId/Time: {body['message']['value']!r}"
    assert m.group("rid") == rid, (m.group("rid"), rid)
    assert body["message"]["value"][: m.start()].strip(), "empty message text"
    assert "odata.metadata" in body and "odata.error" not in body, body
    got = error_values(body)
    for k, v in values.items():
        assert got.get(k) == v, f"expected {k}={v!r} in values, got {got}"
    return body


def error_values(body: dict[str, Any]) -> dict[str, str]:
    return {d["key"]: d["value"] for d in body.get("values") or []}


def raw_deleting_pools(live: LiveServer) -> Iterator[Raw]:
    """A `Raw` for a module's tests; afterwards every pool is deleted and gone (body of a module fixture)."""
    r = Raw(live)
    yield r
    for p in r.json("/pools")["value"]:
        r.delete(f"/pools/{p['id']}")
    wait_for(lambda: not r.json("/pools")["value"], 30, 0.1, "pools to be deleted")
