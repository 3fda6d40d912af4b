"""Shared Key verification against the real signers.

Requests are signed by azure-batch 15.1.0 itself: either the whole `BatchClient` talking to a throwaway local
HTTP server (so the request line and headers are exactly what goes on the wire, including what `requests`
adds after signing), or `BatchSharedKeyAuthPolicy.on_request` on a hand-built request. The Java client is
not available here, so its canonicalisation is ported below, line by line from
`BatchSharedKeyCredentialsPolicy.java`, as an independent signer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from azure.batch import BatchClient
from azure.batch import models as bm
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest as TransportHttpRequest

from batchyard.api.shared_key import (
    SignedRequest,
    compute_signature,
    string_to_sign_variants,
    verify_shared_key,
)
from batchyard.models.errors import BatchError

ACCOUNT = "testacct"
KEY_B64 = base64.b64encode(bytes(range(1, 65))).decode()  # a 64-byte key, like real Batch keys
KEY = base64.b64decode(KEY_B64)
OTHER_KEY_B64 = base64.b64encode(bytes(range(101, 165))).decode()
ACCOUNTS = {ACCOUNT: KEY, "otheracct": base64.b64decode(OTHER_KEY_B64)}
SKEW = timedelta(minutes=15)


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc1123(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


# --- wire capture ----------------------------------------------------------------------------------


@dataclass
class Captured:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def signed(self) -> SignedRequest:
        path, _, query = self.target.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers:
            headers.setdefault(name.lower(), value)
        return SignedRequest(method=self.method, raw_path=path, query_string=query, headers=headers)


@dataclass
class WireServer:
    endpoint: str
    seen: list[Captured] = field(default_factory=list)

    def last(self) -> Captured:
        assert self.seen, "the client sent nothing"
        return self.seen[-1]


def _handler(server: WireServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _capture(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            # self.path is the request target exactly as received (still percent-encoded).
            server.seen.append(Captured(self.command, self.path, list(self.headers.items()), body))

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; odata=minimalmetadata")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._capture()
            self._reply(200, b'{"value": [], "id": "p1"}')

        def do_POST(self) -> None:  # noqa: N802
            self._capture()
            self._reply(201)

        def do_PATCH(self) -> None:  # noqa: N802
            self._capture()
            self._reply(200)

        def do_DELETE(self) -> None:  # noqa: N802
            self._capture()
            self._reply(200)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature is fixed)
            pass

    return Handler


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    state = WireServer(endpoint="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client(wire: WireServer) -> Iterator[BatchClient]:
    c = BatchClient(wire.endpoint, AzureNamedKeyCredential(ACCOUNT, KEY_B64), retry_total=0)
    try:
        yield c
    finally:
        c.close()


def _verify(req: SignedRequest, now: datetime | None = None) -> str:
    return verify_shared_key(req, ACCOUNTS, now or _now(), SKEW)


def _assert_secret_free(err: BatchError, *secrets: str) -> None:
    rendered = str(err) + err.message + repr(err.values)
    for secret in (KEY_B64, OTHER_KEY_B64, *secrets):
        assert secret not in rendered


# --- the real client, on the wire ------------------------------------------------------------------


def test_get_with_filter_select_expand(client: BatchClient, wire: WireServer) -> None:
    list(
        client.list_pools(
            filter="startswith(id,'p') and state eq 'active'",
            select=["id", "state"],
            expand=["stats"],
            max_results=10,
            service_timeout=20,
        )
    )
    cap = wire.last()
    assert cap.method == "GET"
    assert "%27" in cap.target and "$select=id,state" in cap.target and "timeOut=20" in cap.target
    assert _verify(cap.signed()) == ACCOUNT


def test_post_with_json_body(client: BatchClient, wire: WireServer) -> None:
    client.create_pool(
        bm.BatchPoolCreateOptions(id="pool-1", vm_size="standard_d2s_v3", target_dedicated_nodes=2)
    )
    cap = wire.last()
    req = cap.signed()
    assert cap.method == "POST" and cap.body
    assert req.headers["content-type"].startswith("application/json")
    assert req.headers["content-length"] == str(len(cap.body))
    assert _verify(req) == ACCOUNT


def test_bodyless_delete_with_percent_encoded_file_path(client: BatchClient, wire: WireServer) -> None:
    client.delete_task_file("job-1", "task 1", "wd/sub dir/out.txt", recursive=True)
    cap = wire.last()
    req = cap.signed()
    assert cap.method == "DELETE"
    assert req.raw_path == "/jobs/job-1/tasks/task%201/files/wd%2Fsub%20dir%2Fout.txt"
    assert req.headers.get("content-length") == "0"  # signed as "0" by the SDK, sent as "0" by requests
    assert _verify(req) == ACCOUNT


def test_bodyless_delete_without_content_length_on_the_wire(client: BatchClient, wire: WireServer) -> None:
    # An async transport may omit Content-Length on a bodyless DELETE; the SDK still signed "0".
    client.delete_task_file("job-1", "task-1", "stdout.txt")
    req = wire.last().signed()
    stripped = {k: v for k, v in req.headers.items() if k != "content-length"}
    assert _verify(SignedRequest(req.method, req.raw_path, req.query_string, stripped)) == ACCOUNT


def test_file_download_with_ocp_range(client: BatchClient, wire: WireServer) -> None:
    b"".join(client.download_task_file("job-1", "task-1", "wd/a b.txt", ocp_range="bytes=0-1"))
    req = wire.last().signed()
    assert req.raw_path.endswith("/files/wd%2Fa%20b.txt")
    assert req.headers["ocp-range"] == "bytes=0-1"
    assert _verify(req) == ACCOUNT


def test_if_match_quoted_etag(client: BatchClient, wire: WireServer) -> None:
    client.update_pool(
        "pool-1",
        bm.BatchPoolUpdateOptions(metadata=[bm.BatchMetadataItem(name="k", value="v")]),
        etag='"0x8D4EDFEBFADF4AB"',
        match_condition=MatchConditions.IfNotModified,
    )
    cap = wire.last()
    req = cap.signed()
    assert cap.method == "PATCH"
    assert req.headers["if-match"] == '"0x8D4EDFEBFADF4AB"'
    assert _verify(req) == ACCOUNT


def test_get_with_if_modified_since(client: BatchClient, wire: WireServer) -> None:
    client.get_pool("pool-1", if_modified_since=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    req = wire.last().signed()
    assert req.headers["if-modified-since"] == "Fri, 02 Jan 2026 03:04:05 GMT"
    assert _verify(req) == ACCOUNT


# --- the real policy on hand-built requests --------------------------------------------------------


def _policy_sign(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    account: str = ACCOUNT,
    key_b64: str = KEY_B64,
) -> SignedRequest:
    """Run the SDK's own signer on a transport HttpRequest (what the policy receives in the pipeline)."""
    http_request = TransportHttpRequest(method, url, headers=dict(headers or {}))
    if body is not None:
        http_request.set_bytes_body(body)
    BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(account, key_b64)).on_request(
        PipelineRequest(http_request, PipelineContext(None))
    )
    parts = urllib.parse.urlsplit(http_request.url)
    lowered: dict[str, str] = {}
    for name, value in http_request.headers.items():
        lowered.setdefault(name.lower(), value)
    return SignedRequest(method, parts.path, parts.query, lowered)


URL = "https://testacct.eastus.batch.azure.com/pools?api-version=2025-06-01&timeOut=30"


def _with_header(req: SignedRequest, name: str, value: str | None) -> SignedRequest:
    headers = dict(req.headers)
    if value is None:
        headers.pop(name, None)
    else:
        headers[name] = value
    return SignedRequest(req.method, req.raw_path, req.query_string, headers)


def test_policy_signed_request_is_accepted_and_primary_variant_matches() -> None:
    req = _policy_sign("GET", URL)
    assert _verify(req) == ACCOUNT
    variants = string_to_sign_variants(req, ACCOUNT)
    assert len(variants) == len(set(variants))
    scheme_sig = req.headers["authorization"].split(":", 1)[1]
    assert compute_signature(variants[0], KEY) == scheme_sig  # the Python form is tried first


def test_policy_post_with_body() -> None:
    body = b'{"id":"p1","vmSize":"standard_d2s_v3"}'
    req = _policy_sign(
        "POST",
        URL,
        {"Content-Type": "application/json; odata=minimalmetadata", "Content-Length": str(len(body))},
        body,
    )
    assert _verify(req) == ACCOUNT


def test_account_lookup_is_case_insensitive() -> None:
    req = _policy_sign("GET", URL, account="TestAcct")  # signs "/TestAcct/pools"
    assert _verify(req) == ACCOUNT


def test_tampered_signature_is_403() -> None:
    req = _policy_sign("GET", URL)
    sig = req.headers["authorization"].split(":", 1)[1]
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(BatchError) as info:
        _verify(_with_header(req, "authorization", f"SharedKey {ACCOUNT}:{flipped}"))
    err = info.value
    assert (err.status, err.code) == (403, "AuthenticationFailed")
    detail = dict(err.values)["AuthenticationErrorDetail"]
    assert "not the same as any computed signature" in detail
    _assert_secret_free(err, sig, flipped)


def test_tampered_request_is_403() -> None:
    req = _policy_sign("GET", URL)
    moved = SignedRequest(req.method, "/pools/other", req.query_string, req.headers)
    with pytest.raises(BatchError) as info:
        _verify(moved)
    assert (info.value.status, info.value.code) == (403, "AuthenticationFailed")


def test_wrong_key_is_403() -> None:
    req = _policy_sign("GET", URL, key_b64=OTHER_KEY_B64)
    with pytest.raises(BatchError) as info:
        _verify(req)
    err = info.value
    assert (err.status, err.code) == (403, "AuthenticationFailed")
    _assert_secret_free(err, req.headers["authorization"].split(":", 1)[1])


def test_unknown_account_is_403() -> None:
    req = _policy_sign("GET", URL, account="nosuchacct")
    with pytest.raises(BatchError) as info:
        _verify(req)
    err = info.value
    assert (err.status, err.code) == (403, "AuthenticationFailed")
    _assert_secret_free(err, req.headers["authorization"].split(":", 1)[1])


@pytest.mark.parametrize("offset", [timedelta(minutes=-16), timedelta(minutes=16)])
def test_ocp_date_outside_skew_is_403(offset: timedelta) -> None:
    now = _now()
    req = _policy_sign("GET", URL, {"ocp-date": _rfc1123(now + offset)})
    with pytest.raises(BatchError) as info:
        verify_shared_key(req, ACCOUNTS, now, SKEW)
    err = info.value
    assert (err.status, err.code) == (403, "AuthenticationFailed")
    assert "outside the allowed window" in dict(err.values)["AuthenticationErrorDetail"]
    _assert_secret_free(err, req.headers["authorization"].split(":", 1)[1])


def test_ocp_date_inside_skew_is_accepted() -> None:
    now = _now()
    req = _policy_sign("GET", URL, {"ocp-date": _rfc1123(now - timedelta(minutes=14))})
    assert verify_shared_key(req, ACCOUNTS, now, SKEW) == ACCOUNT


def test_ocp_date_wins_over_date() -> None:
    # The SDK signs both (Date in its slot, ocp-date as an ocp- header); only ocp-date is the request time.
    now = _now()
    req = _policy_sign("GET", URL, {"Date": _rfc1123(now - timedelta(hours=1))})
    assert req.headers["ocp-date"] and req.headers["date"]
    assert verify_shared_key(req, ACCOUNTS, now, SKEW) == ACCOUNT


def test_missing_authorization() -> None:
    req = _with_header(_policy_sign("GET", URL), "authorization", None)
    with pytest.raises(BatchError) as info:
        _verify(req)
    assert (info.value.status, info.value.code) == (401, "AuthenticationRequired")


@pytest.mark.parametrize(
    "value",
    [
        "SharedKey",
        f"SharedKey {ACCOUNT}",
        f"SharedKey {ACCOUNT}:",
        "SharedKey :abc=",
        f"Basic {ACCOUNT}:abc=",
        f"SharedKey {ACCOUNT} :abc=",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig",
    ],
)
def test_malformed_authorization_is_400(value: str) -> None:
    req = _with_header(_policy_sign("GET", URL), "authorization", value)
    with pytest.raises(BatchError) as info:
        _verify(req)
    assert (info.value.status, info.value.code) == (400, "InvalidAuthenticationInfo")


def test_missing_date_headers() -> None:
    req = _with_header(_policy_sign("GET", URL), "ocp-date", None)
    with pytest.raises(BatchError) as info:
        _verify(req)
    assert (info.value.status, info.value.code) == (400, "MissingRequiredHeader")
    assert dict(info.value.values)["HeaderName"] == "ocp-date"


def test_unparseable_date_is_403() -> None:
    req = _policy_sign("GET", URL, {"ocp-date": "Do., 02 Mär 2017 12:53:51 GMT"})
    with pytest.raises(BatchError) as info:
        _verify(req)
    assert (info.value.status, info.value.code) == (403, "AuthenticationFailed")
    assert (
        "ocp-date header in the request is incorrect" in dict(info.value.values)["AuthenticationErrorDetail"]
    )


# --- Java azure-compute-batch, ported --------------------------------------------------------------


def _java_sign(method: str, url: str, headers: dict[str, str], account: str, key_b64: str) -> str:
    """String to sign exactly as BatchSharedKeyCredentialsPolicy.signHeader builds it; returns the header."""
    h = {k.lower(): v for k, v in headers.items()}
    date = "" if "ocp-date" in h else h.get("date", "")
    cl = h.get("content-length", "")
    parts = [
        method,
        h.get("content-encoding", ""),
        h.get("content-language", ""),
        "" if cl and int(cl) < 0 else cl,
        h.get("content-md5", ""),
        h.get("content-type", ""),
        date,
        h.get("if-modified-since", ""),
        h.get("if-match", ""),
        h.get("if-none-match", ""),
        h.get("if-unmodified-since", ""),
        h.get("range", ""),
    ]
    s = "\n".join(parts) + "\n"
    for name in sorted(n for n in h if n.startswith("ocp-")):
        s += f"{name}:{h[name].replace(chr(10), ' ').replace(chr(13), ' ').lstrip(' ')}\n"
    split = urllib.parse.urlsplit(url)
    s += "/" + account.lower() + "/" + split.path.lstrip("/")
    if split.query:
        components: dict[str, str] = {}
        for pair in split.query.split("&"):
            k, _, v = pair.partition("=")
            k = urllib.parse.unquote_plus(k).lower()
            components[k] = f"{k}:{urllib.parse.unquote_plus(v)}"
        for k in sorted(components):
            s += "\n" + components[k]
    digest = hmac.new(base64.b64decode(key_b64), s.encode("utf-8"), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


def test_java_variant_lowercased_query_names_and_account() -> None:
    url = (
        "https://testacct.eastus.batch.azure.com/jobs/job-1/tasks"
        "?api-version=2025-06-01&timeOut=30&$filter=state%20eq%20%27completed%27&$select=id,state"
    )
    headers = {"ocp-date": _rfc1123(_now()), "Date": _rfc1123(_now()), "Content-Length": "0"}
    headers["Authorization"] = _java_sign("GET", url, headers, "TestAcct", KEY_B64)
    split = urllib.parse.urlsplit(url)
    req = SignedRequest("GET", split.path, split.query, {k.lower(): v for k, v in headers.items()})
    assert _verify(req) == ACCOUNT
    # ...and it is genuinely a different string from the Python one.
    python_form = string_to_sign_variants(req, "TestAcct")[0]
    assert "\ntimeOut:30" in python_form and "/TestAcct/jobs" in python_form


def test_java_variant_bodyless_delete_signed_without_length() -> None:
    url = "https://testacct.eastus.batch.azure.com/pools/p1?api-version=2025-06-01"
    headers = {"ocp-date": _rfc1123(_now())}
    headers["Authorization"] = _java_sign("DELETE", url, headers, ACCOUNT, KEY_B64)
    headers["Content-Length"] = "0"  # added by the transport after signing
    split = urllib.parse.urlsplit(url)
    req = SignedRequest("DELETE", split.path, split.query, {k.lower(): v for k, v in headers.items()})
    assert _verify(req) == ACCOUNT


def test_java_variant_date_header_only() -> None:
    # Java signs Date (and adds no ocp-date) when the caller set Date: then Date is the request time.
    now = _now()
    url = "https://testacct.eastus.batch.azure.com/pools?api-version=2025-06-01"
    for sent, ok in ((now, True), (now - timedelta(minutes=20), False)):
        headers = {"Date": _rfc1123(sent), "Content-Length": "0"}
        headers["Authorization"] = _java_sign("GET", url, headers, ACCOUNT, KEY_B64)
        split = urllib.parse.urlsplit(url)
        req = SignedRequest("GET", split.path, split.query, {k.lower(): v for k, v in headers.items()})
        if ok:
            assert verify_shared_key(req, ACCOUNTS, now, SKEW) == ACCOUNT
        else:
            with pytest.raises(BatchError) as info:
                verify_shared_key(req, ACCOUNTS, now, SKEW)
            assert (info.value.status, info.value.code) == (403, "AuthenticationFailed")
            assert "Request date header too old" in dict(info.value.values)["AuthenticationErrorDetail"]


# --- the pure helpers ------------------------------------------------------------------------------


def test_compute_signature_is_base64_hmac_sha256() -> None:
    expected = base64.b64encode(hmac.new(KEY, b"GET\nx", hashlib.sha256).digest()).decode()
    assert compute_signature("GET\nx", KEY) == expected


def test_variants_match_documented_python_string() -> None:
    # The string captured from azure-batch 15.1.0 in rest_api.md §2.1.
    date = "Sun, 22 Nov 2026 01:29:57 GMT"
    req = SignedRequest(
        "GET",
        "/pools",
        "api-version=2025-06-01&maxresults=10"
        "&$filter=startswith%28id%2C%27p%27%29%20and%20state%20eq%20%27active%27&$select=id,state&$expand=stats",
        {"ocp-date": date},
    )
    assert string_to_sign_variants(req, "testacct")[0] == (
        "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:Sun, 22 Nov 2026 01:29:57 GMT\n/testacct/pools"
        "\n$expand:stats\n$filter:startswith(id,'p') and state eq 'active'\n$select:id,state"
        "\napi-version:2025-06-01\nmaxresults:10"
    )


def test_variants_are_few_and_deduplicated() -> None:
    req = SignedRequest(
        "GET", "/pools", "api-version=2025-06-01", {"ocp-date": "Sun, 22 Nov 2026 01:29:57 GMT"}
    )
    assert len(string_to_sign_variants(req, "testacct")) == 1
    req = SignedRequest(
        "DELETE", "/pools/p", "api-version=2025-06-01&timeOut=5", {"ocp-date": "x", "date": "y"}
    )
    variants = string_to_sign_variants(req, "TestAcct")
    assert len(variants) == len(set(variants)) <= 12


# --- the 403 detail shows the string the sending client signed ------------------------------------------


def _detail(req: SignedRequest) -> str:
    with pytest.raises(BatchError) as info:
        _verify(req)
    shown = dict(info.value.values)["AuthenticationErrorDetail"]
    return shown.split("Server used following string to sign: '", 1)[1][: -len("'.")]


def _js_string_to_sign(
    method: str, url: str, headers: dict[str, str], account: str, body: bytes | None
) -> str:
    """Port of `BatchSharedKeyCredentials.signRequest` of @azure/batch 10.2.0 (ms-rest-js)."""
    h = {k.lower(): v for k, v in headers.items()}

    def slot(name: str) -> str:
        return h.get(name.lower(), "") + "\n"

    if h.get("content-length"):
        length = h["content-length"] + "\n"
    elif body:
        length = f"{len(body)}\n"
    else:
        length = "0\n" if method == "POST" else "\n"
    s = method + "\n" + slot("Content-Encoding") + slot("Content-Language") + length
    for name in ("Content-MD5", "Content-Type", "Date", "If-Modified-Since", "If-Match", "If-None-Match"):
        s += slot(name)
    s += slot("If-Unmodified-Since") + slot("Range")
    s += "".join(f"{n}:{h[n]}\n" for n in sorted(n for n in h if n.startswith("ocp-") and h[n]))
    split = urllib.parse.urlsplit(url)
    s += f"/{account}{split.path}"
    query = dict(urllib.parse.parse_qsl(split.query))
    s += "".join(f"\n{n}:{query[n]}" for n in sorted(query))
    return s


@pytest.mark.parametrize("method", ["DELETE", "GET", "PUT", "POST"])
def test_js_client_detail_is_what_it_signed(method: str) -> None:
    url = "https://testacct.eastus.batch.azure.com/jobs/j1?api-version=2022-10-01.16.0&$filter=state%20eq%20%27a%27"
    headers = {
        "ocp-date": _rfc1123(_now()),
        "content-type": "application/json; charset=utf-8",
        "user-agent": "@azure/batch/10.2.0 ms-rest-azure-js/2.1.0 ms-rest-js/2.7.0 Node/v20.20.2",
    }
    signed = _js_string_to_sign(method, url, headers, ACCOUNT, None)
    digest = hmac.new(base64.b64decode(OTHER_KEY_B64), signed.encode(), hashlib.sha256).digest()
    headers["authorization"] = f"SharedKey {ACCOUNT}:{base64.b64encode(digest).decode()}"
    split = urllib.parse.urlsplit(url)
    req = SignedRequest(method, split.path, split.query, headers)
    assert _detail(req) == signed
    # and with the right key the same request is accepted
    good = hmac.new(base64.b64decode(KEY_B64), signed.encode(), hashlib.sha256).digest()
    ok = SignedRequest(
        method,
        split.path,
        split.query,
        dict(headers, authorization=f"SharedKey {ACCOUNT}:{base64.b64encode(good).decode()}"),
    )
    assert _verify(ok) == ACCOUNT


def test_python_client_detail_is_what_it_signed() -> None:
    req = _policy_sign("DELETE", URL, key_b64=OTHER_KEY_B64)
    shown = _detail(req)
    sig = req.headers["authorization"].split(":", 1)[1]
    assert compute_signature(shown, base64.b64decode(OTHER_KEY_B64)) == sig


def test_java_client_detail_is_what_it_signed() -> None:
    url = "https://testacct.eastus.batch.azure.com/jobs/j1?api-version=2025-06-01&timeOut=30"
    headers = {
        "ocp-date": _rfc1123(_now()),
        "Content-Length": "0",
        "User-Agent": "azsdk-java-azure-compute-batch/1.0.0",
    }
    headers["Authorization"] = _java_sign("GET", url, headers, "TestAcct", OTHER_KEY_B64)
    split = urllib.parse.urlsplit(url)
    req = SignedRequest("GET", split.path, split.query, {k.lower(): v for k, v in headers.items()})
    shown = _detail(req)
    sig = headers["Authorization"].split(":", 1)[1]
    assert compute_signature(shown, base64.b64decode(OTHER_KEY_B64)) == sig
